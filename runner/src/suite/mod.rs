//! Suites: `suites/*.yaml` -> checked [`Suite`]s.
//!
//! In: a suite file, the names of the declared variants, and the fixture
//! names the guest will have ([`crate::image::FixtureNames`]). Out: a
//! [`Suite`]: which variants it runs on, its cases, each case's agent
//! steps with what each must show ([`crate::steps::StepExpect`], parsed
//! by the step's family), and per-variant expected outcomes
//! ([`Expected`]). Every error points at file, line and column, before
//! anything builds or boots.
//!
//! - `format`: the file format as parsed ([`SuiteFile`], [`Case`],
//!   [`Expected`], [`StepRef`]).
//! - `decode`: a step's mapping -> [`SuiteStep`] (the agent step, its
//!   label, its expectation).
//! - `check`: one check per case, one for expected outcomes, the steps,
//!   variant lists, errno names.
//! - `selftests`: a `kselftest:` or `ftracetest:` section becomes one
//!   case per test, each with one `selftest` step
//!   (`crate::steps::selftest`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::image::FixtureNames;
use crate::input::{self, find_from};

mod check;
mod decode;
mod format;
mod selftests;

pub use check::MAX_SECONDS;
pub use decode::SuiteStep;
pub use format::{
    Case, ExpectKey, Expectations, Expected, FtracetestSection, KselftestSection, SelftestDecl,
    StepRef, SuiteFile,
};

/// A loaded, checked suite.
#[derive(Clone, Debug)]
pub struct Suite {
    pub file: SuiteFile,
    pub path: PathBuf,
}

impl Suite {
    pub fn expected(&self, case: &Case, variant: &str) -> Expected {
        case.expect
            .get(&ExpectKey::Variant(variant.to_string()))
            .or_else(|| case.expect.get(&ExpectKey::Default))
            .cloned()
            .unwrap_or(Expected::Pass)
    }

    /// The outcome `case` must have on `variant`, whose kernel can do
    /// `caps` (read from its config): the suite's expectation, except that
    /// on a kernel that cannot do fmod_ret (`CONFIG_FUNCTION_ERROR_INJECTION`
    /// unset) a case's first fmod_ret attach is refused with EINVAL and the
    /// case stops there: a fact of the kernel, stated once here instead of
    /// per variant in the suites. An expectation the suite gives for the
    /// variant by name still wins.
    pub fn expected_on(
        &self,
        case: &Case,
        variant: &str,
        caps: crate::build::caps::Caps,
    ) -> Expected {
        let named = case
            .expect
            .contains_key(&ExpectKey::Variant(variant.to_string()));
        if !caps.fmod_ret && !named {
            let fmod_ret = case.steps.iter().enumerate().find(|(_, s)| {
                matches!(
                    s.step,
                    coexist_proto::Step::BpfAttach {
                        kind: coexist_proto::BpfKind::FmodRet,
                        ..
                    }
                )
            });
            if let Some((i, s)) = fmod_ret {
                return Expected::Fail {
                    step: match &s.label {
                        Some(l) => StepRef::Label(l.clone()),
                        None => StepRef::Index(i + 1),
                    },
                    errno: crate::input::Errno::parse("EINVAL").expect("a known errno"),
                };
            }
        }
        self.expected(case, variant)
    }

    pub fn case_variants<'a>(&'a self, case: &'a Case) -> &'a [String] {
        case.variants.as_deref().unwrap_or(&self.file.variants)
    }
}

/// Parses and checks a suite file. `variants` and `fixtures` are the names
/// that exist (modules and BPF programs), for the checks.
pub fn load(path: &Path, variants: &[String], fixtures: &FixtureNames) -> Result<Suite> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    parse(&text, path, variants, fixtures)
}

pub fn parse(text: &str, path: &Path, variants: &[String], fx: &FixtureNames) -> Result<Suite> {
    let file: SuiteFile =
        serde_yaml::from_str(text).map_err(|e| input::yaml_error_in(text, path, &e))?;
    let at = |from: usize, needle: &str| input::place(path, text, from, needle);
    let fail = |pos: String, m: String| anyhow::anyhow!("{pos}: {m}");
    input::check_name("suite", &file.suite).map_err(|m| fail(at(1, "suite:"), m))?;
    check::check_variant_list(&file.variants, variants).map_err(|(n, m)| fail(at(1, &n), m))?;
    input::check_seconds("timeout", file.timeout, 0.0, MAX_SECONDS)
        .map_err(|m| fail(at(1, "timeout:"), m))?;
    for a in &file.allow_splats {
        regex::Regex::new(a)
            .map_err(|e| fail(at(1, a), format!("allow_splats: not a regex: {e}")))?;
    }
    if file.cases.is_empty() && file.kselftest.is_none() && file.ftracetest.is_none() {
        bail!("{}: the suite has no cases", at(1, "cases"));
    }
    let mut from = 1;
    for (ci, case) in file.cases.iter().enumerate() {
        let line = find_from(text, from, &format!("name: {}", case.name))
            .map(|p| p.0)
            .unwrap_or(from);
        from = line + 1;
        check::check_case(&file, ci, variants, fx, &at, line)?;
    }
    let mut file = file;
    selftests::expand_selftests(&mut file, text, path, variants, fx)?;
    if file.cases.is_empty() {
        bail!(
            "{}: the suite has no cases (and no kselftest or ftracetest tests)",
            at(1, "cases")
        );
    }
    Ok(Suite {
        file,
        path: path.to_path_buf(),
    })
}

/// Suite names are unique: a job's id starts with its suite's name, so a
/// second file declaring a name would run its cases under the first's.
/// Of two files with one name, the one that is not `suites/<name>.yaml`
/// (the file `coexist suite <name>` runs) is refused; else the later one.
/// The message names both files.
pub fn check_unique_names(suites: &[Suite]) -> Result<()> {
    let named_after = |s: &Suite| {
        s.path
            .file_stem()
            .is_some_and(|stem| stem == s.file.suite.as_str())
    };
    let declared_at = |s: &Suite| {
        let text = std::fs::read_to_string(&s.path).unwrap_or_default();
        input::place(&s.path, &text, 1, "suite:")
    };
    for (i, a) in suites.iter().enumerate() {
        if let Some(b) = suites[..i].iter().find(|b| b.file.suite == a.file.suite) {
            let (refused, first) = if named_after(a) && !named_after(b) {
                (b, a)
            } else {
                (a, b)
            };
            bail!(
                "{}: suite '{}' is declared twice: here and in {} (suite names are unique; \
                 rename this one)",
                declared_at(refused),
                a.file.suite,
                declared_at(first)
            );
        }
    }
    Ok(())
}

/// Every suite in `suites/`, sorted by name.
pub fn list_files(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join("suites");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    if let Some(y) = v.iter().find(|p| p.extension().is_some_and(|x| x == "yml")) {
        bail!(
            "{}: suites are read from *.yaml files only; rename it to {}",
            y.display(),
            y.with_extension("yaml").display()
        );
    }
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Errno;
    use coexist_proto::Step;

    fn fx() -> FixtureNames {
        FixtureNames {
            modules: vec!["livepatch-sample".into(), "coexist_target".into()],
            bpf_programs: [
                ("cx_fentry", "fentry"),
                ("cx_fexit", "fexit"),
                ("cx_map", ".maps"),
            ]
            .iter()
            .map(|(n, s)| crate::image::BpfProgram {
                name: n.to_string(),
                section: s.to_string(),
            })
            .collect(),
            triggers: vec!["cmdline_proc_show".into()],
            selftests: vec!["livepatch".into(), "ftrace".into()],
        }
    }

    fn vars() -> Vec<String> {
        vec!["baseline".into(), "share-ipmodify".into()]
    }

    #[test]
    fn a_kernel_without_fmod_ret_refuses_the_first_fmod_ret_attach_with_einval() {
        let mut f = fx();
        f.bpf_programs.push(crate::image::BpfProgram {
            name: "cx_fmod_ret".into(),
            section: "fmod_ret".into(),
        });
        let text = "\
suite: t
variants: [baseline, share-ipmodify]
cases:
  - name: fmod
    steps:
      - livepatch_load: {module: livepatch-sample}
      - bpf_attach: {program: cx_fmod_ret, kind: fmod_ret, target: cmdline_proc_show}
      - trigger: {target: cmdline_proc_show}
        expect: {output: \"x\\n\"}
    expect:
      baseline: {fail: {step: 1, errno: EBUSY}}
  - name: no-fmod
    steps:
      - livepatch_load: {module: livepatch-sample}
    expect: {default: pass}
";
        let s = parse(text, Path::new("t.yaml"), &vars(), &f).unwrap();
        let (fmod, plain) = (&s.file.cases[0], &s.file.cases[1]);
        let none = crate::build::caps::Caps { fmod_ret: false };
        let all = crate::build::caps::Caps::ALL;
        assert_eq!(
            s.expected_on(fmod, "share-ipmodify", none),
            Expected::Fail {
                step: StepRef::Index(2),
                errno: Errno::parse("EINVAL").unwrap()
            }
        );
        assert_eq!(s.expected_on(fmod, "share-ipmodify", all), Expected::Pass);
        // Named by the suite: its expectation wins.
        assert_eq!(
            s.expected_on(fmod, "baseline", none),
            s.expected(fmod, "baseline")
        );
        // No fmod_ret step: the suite's expectation.
        assert_eq!(s.expected_on(plain, "share-ipmodify", none), Expected::Pass);
    }

    const GOOD: &str = "\
suite: t
variants: [baseline, share-ipmodify]
cases:
  - name: lp-then-fentry
    steps:
      - livepatch_load: {module: livepatch-sample}
      - bpf_attach: {program: cx_fentry, kind: fentry, target: cmdline_proc_show}
        as: fentry
      - trigger: {target: cmdline_proc_show}
        expect: {output: \"this has been live patched\\n\"}
      - bpf_stats: {handle: fentry}
        expect: {hits: 1}
    expect:
      default: pass
      baseline: {fail: {step: fentry, errno: EBUSY}}
";

    fn err(text: &str) -> String {
        format!(
            "{:#}",
            parse(text, Path::new("s.yaml"), &vars(), &fx()).unwrap_err()
        )
    }

    #[test]
    fn parses_a_complete_case() {
        let s = parse(GOOD, Path::new("s.yaml"), &vars(), &fx()).unwrap();
        let c = &s.file.cases[0];
        assert_eq!(c.steps.len(), 4);
        assert_eq!(c.steps[1].label.as_deref(), Some("fentry"));
        assert_eq!(c.steps[3].handle_ref.as_deref(), Some("fentry"));
        assert_eq!(
            c.steps[2].expect.output.as_deref(),
            Some("this has been live patched\n")
        );
        assert_eq!(s.expected(c, "share-ipmodify"), Expected::Pass);
        assert_eq!(
            s.expected(c, "baseline"),
            Expected::Fail {
                step: StepRef::Label("fentry".into()),
                errno: Errno::parse("EBUSY").unwrap()
            }
        );
    }

    #[test]
    fn unknown_step_has_its_position() {
        let t = GOOD.replace("      - trigger:", "      - trigr:");
        let e = err(&t);
        assert!(e.starts_with("s.yaml:9:9: "), "{e}");
        assert!(e.contains("unknown step 'trigr'"), "{e}");
    }

    #[test]
    fn wrong_type_has_its_position() {
        let t = GOOD.replace("expect: {hits: 1}", "expect: {hits: many}");
        let e = err(&t);
        assert!(e.starts_with("s.yaml:12:"), "{e}");
        assert!(e.contains("invalid type"), "{e}");
        let t = GOOD.replace("kind: fentry,", "kind: kprobe,");
        let e = err(&t);
        assert!(e.starts_with("s.yaml:7:"), "{e}");
        assert!(e.contains("kprobe"), "{e}");
    }

    #[test]
    fn expectation_that_does_not_apply_to_the_kind_is_placed() {
        let t = GOOD.replace(
            "expect: {output: \"this has been live patched\\n\"}",
            "expect: {output_contains: x, hits: 1}",
        );
        let e = err(&t);
        assert!(e.starts_with("s.yaml:10:"), "{e}");
        assert!(
            e.contains("expectation 'hits' does not apply to a 'trigger' step"),
            "{e}"
        );
    }

    #[test]
    fn unknown_variant_fixture_and_label_are_placed() {
        let e = err(&GOOD.replace(
            "variants: [baseline, share-ipmodify]",
            "variants: [baseline, nope]",
        ));
        assert!(e.starts_with("s.yaml:2:"), "{e}");
        assert!(e.contains("unknown variant 'nope'"), "{e}");
        let e = err(&GOOD.replace("{module: livepatch-sample}", "{module: livepatch-nope}"));
        assert!(e.starts_with("s.yaml:6:"), "{e}");
        assert!(e.contains("unknown fixture module 'livepatch-nope'"), "{e}");
        let e = err(&GOOD.replace("{handle: fentry}", "{handle: fexit}"));
        assert!(e.starts_with("s.yaml:11:"), "{e}");
        let e = err(&GOOD.replace("program: cx_fentry,", "program: cx_nope,"));
        assert!(e.contains("unknown BPF program 'cx_nope'"), "{e}");
        // A program that is not in a section bpf_attach attaches is not one
        // it may name; the names it may are listed.
        let e = err(&GOOD.replace("program: cx_fentry,", "program: cx_map,"));
        assert!(
            e.contains("unknown BPF program 'cx_map' (known: cx_fentry, cx_fexit)"),
            "{e}"
        );
        let e = err(&GOOD.replace("errno: EBUSY", "errno: EBUZY"));
        assert!(e.contains("unknown errno name 'EBUZY'"), "{e}");
        let e = err(&GOOD.replace("step: fentry, errno", "step: 9, errno"));
        assert!(
            e.contains("`step: 9` names no step of this case: a step is a label (fentry) or a 1-based index (1 to 4)"),
            "{e}"
        );
        for bad in ["-1", "0", "1.5", "nope"] {
            let e = err(&GOOD.replace("step: fentry, errno", &format!("step: {bad}, errno")));
            assert!(
                e.starts_with("s.yaml:15:7: ")
                    && e.contains(&format!("`step: {bad}` names no step of this case")),
                "{e}"
            );
        }
    }

    #[test]
    fn xfail_needs_reason_and_reference() {
        let t = GOOD.replace(
            "baseline: {fail: {step: fentry, errno: EBUSY}}",
            "baseline: {xfail: {reason: \"\", ref: \"\"}}",
        );
        assert!(err(&t).contains("needs a reason and an upstream reference"));
        let t = GOOD.replace(
            "baseline: {fail: {step: fentry, errno: EBUSY}}",
            "baseline: {xfail: {reason: x}}",
        );
        assert!(err(&t).contains("missing field `ref`"), "{}", err(&t));
    }

    #[test]
    fn selftest_sections_become_cases() {
        let t = "\
suite: st
variants: [baseline, share-ipmodify]
timeout: 100
kselftest:
  collection: livepatch
  tests:
    - test-livepatch.sh
    - test: test-callbacks.sh
      timeout: 400
      expect:
        baseline: skip
        share-ipmodify: {xfail: {reason: known, ref: https://lore.kernel.org/x}}
ftracetest:
  tests:
    - test: test.d/direct/ftrace-direct.tc
      expect: {baseline: fail}
";
        let s = parse(t, Path::new("s.yaml"), &vars(), &fx()).unwrap();
        let names: Vec<&str> = s.file.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "kselftest/livepatch/test-livepatch.sh",
                "kselftest/livepatch/test-callbacks.sh",
                "ftracetest/direct/ftrace-direct.tc"
            ]
        );
        let c = &s.file.cases[1];
        assert_eq!(c.steps[0].timeout, Some(400.0));
        match &c.steps[0].step {
            Step::Selftest {
                runner,
                collection,
                test,
                timeout_ms,
            } => {
                assert_eq!(*runner, coexist_proto::SelftestRunner::Kselftest);
                assert_eq!(
                    (collection.as_str(), test.as_str()),
                    ("livepatch", "test-callbacks.sh")
                );
                // The agent stops the test before the host gives up on the step.
                assert_eq!(*timeout_ms, 390_000);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.expected(c, "baseline"), Expected::Skip);
        assert_eq!(s.expected(&s.file.cases[0], "baseline"), Expected::Pass);
        assert_eq!(
            s.expected(&s.file.cases[2], "baseline"),
            Expected::TestFails
        );
        assert_eq!(s.file.cases[0].steps[0].timeout, Some(100.0));
        assert_eq!(crate::steps::selftest::agent_timeout_ms(5.0), 4000);
        // Expectations round-trip through a report.
        for e in [Expected::Skip, Expected::TestFails] {
            let j = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<Expected>(&j).unwrap(), e, "{j}");
        }
    }

    #[test]
    fn a_selftest_may_run_on_some_variants_only() {
        let t = "\
suite: st
variants: [baseline, share-ipmodify]
kselftest:
  collection: livepatch
  tests:
    - test-livepatch.sh
    - {test: test-syscall.sh, variants: [share-ipmodify]}
";
        let s = parse(t, Path::new("s.yaml"), &vars(), &fx()).unwrap();
        assert_eq!(s.file.cases[0].variants, None);
        assert_eq!(
            s.file.cases[1].variants.as_deref(),
            Some(&["share-ipmodify".to_string()][..])
        );
        // An unknown variant is placed at its line, and so is an expectation
        // for a variant the test does not run on.
        let e = err(&t.replace("variants: [share-ipmodify]}", "variants: [nope]}"));
        assert!(e.starts_with("s.yaml:7:"), "{e}");
        assert!(
            e.contains("test 'test-syscall.sh': unknown variant 'nope'"),
            "{e}"
        );
        let e = err(&t.replace(
            "variants: [share-ipmodify]}",
            "variants: [share-ipmodify], expect: {baseline: skip}}",
        ));
        assert!(e.contains("baseline"), "{e}");
    }

    #[test]
    fn the_project_suites_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let fx = crate::image::project_fixtures(&root);
        let seq = crate::image::BpfProgram {
            name: "cx_fexit_seq".into(),
            section: "fexit".into(),
        };
        assert!(fx.bpf_programs.contains(&seq), "{:?}", fx.bpf_programs);
        let vs: Vec<String> = crate::build::variant::Project { root: root.clone() }
            .load_variants(None)
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        let files = list_files(&root).unwrap();
        assert!(!files.is_empty());
        for f in files {
            load(&f, &vs, &fx).unwrap();
        }
    }
}
