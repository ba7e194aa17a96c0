//! exec, read, write, insmod, rmmod, sleep, poweroff, trigger: the common
//! expectation fields only. Fixtures: insmod's module, trigger's target.

use coexist_proto::Step;

use crate::image::FixtureNames;

/// A module name the project has (samples and own fixtures), or a path.
pub fn check_module(m: &str, fx: &FixtureNames) -> Result<(), (String, String)> {
    let norm = m.replace('-', "_");
    if m.contains('/') || fx.modules.iter().any(|k| k.replace('-', "_") == norm) {
        Ok(())
    } else {
        Err((
            m.to_string(),
            format!(
                "unknown fixture module '{m}' (known: {})",
                fx.modules.join(", ")
            ),
        ))
    }
}

pub fn check_fixtures(step: &Step, fx: &FixtureNames) -> Result<(), (String, String)> {
    match step {
        Step::Insmod { module, .. } => check_module(module, fx),
        Step::Trigger { target } if !fx.triggers.contains(target) => Err((
            target.clone(),
            format!(
                "unknown trigger target '{target}' (known: {})",
                fx.triggers.join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

pub fn check_args(step: &Step) -> Result<(), (String, String)> {
    match step {
        Step::Exec { argv } if argv.is_empty() || argv[0].is_empty() => {
            Err(("argv".into(), "exec needs a program: argv is empty".into()))
        }
        Step::Sleep { ms } => super::check_range("ms", *ms, true, super::MAX_MS),
        _ => Ok(()),
    }
}
