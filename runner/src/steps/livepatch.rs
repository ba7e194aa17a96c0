//! livepatch_load, livepatch_disable, livepatch_unload: the common
//! expectation fields only (the answer's `Livepatch` data holds the
//! transition time). Fixtures: livepatch_load's module.

use coexist_proto::Step;

use crate::suite::FixtureNames;

pub fn check_fixtures(step: &Step, fx: &FixtureNames) -> Result<(), (String, String)> {
    match step {
        Step::LivepatchLoad { module, .. } => super::basic::check_module(module, fx),
        _ => Ok(()),
    }
}
