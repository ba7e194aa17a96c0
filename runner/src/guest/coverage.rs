//! A job's coverage, in a coverage twin's guest: the one way suite cases
//! and explore sequences reset gcov's counters before their first step
//! and read the counts back after their last.
//!
//! In: a READY [`Vm`] of a coverage twin (`Prepared::profiled`). Out:
//! the guest's `.gcda` files, written under a job's directory by their
//! path below [`GCOV_DIR`] (the build directory's path on the host), for
//! `coverage::` to read with gcov.

use std::path::Path;
use std::time::Duration;

use coexist_proto::{AnswerData, FilesData, Step};

use crate::vm::Vm;

/// Where a gcov kernel shows its counts (debugfs).
pub const GCOV_DIR: &str = "/sys/kernel/debug/gcov";

const TIMEOUT: Duration = Duration::from_secs(60);

/// Zeroes every counter, so the job's counts are its own (a restored
/// guest carries the counts of its boot and of the snapshot's making).
pub fn reset(vm: &mut Vm) -> Result<(), String> {
    let out = vm
        .run(
            Step::Write {
                path: format!("{GCOV_DIR}/reset"),
                data: "1".into(),
                create: false,
            },
            TIMEOUT,
        )
        .map_err(|f| format!("gcov reset: {}", f.message))?;
    if !out.answer.ok {
        return Err(format!(
            "gcov reset: {}",
            out.answer.error.unwrap_or_default()
        ));
    }
    Ok(())
}

/// Reads the guest's `.gcda` files back into `into`, each at its path
/// below [`GCOV_DIR`]. Returns how many.
pub fn collect(vm: &mut Vm, into: &Path) -> Result<usize, String> {
    let out = vm
        .run(
            Step::ReadFiles {
                dir: GCOV_DIR.into(),
                suffix: ".gcda".into(),
            },
            TIMEOUT,
        )
        .map_err(|f| format!("gcov counts: {}", f.message))?;
    let Some(AnswerData::Files(FilesData { files })) = out.answer.data else {
        return Err(format!(
            "gcov counts: {}",
            out.answer.error.unwrap_or_default()
        ));
    };
    for f in &files {
        let rel = f
            .path
            .strip_prefix(GCOV_DIR)
            .unwrap_or(&f.path)
            .trim_start_matches('/');
        if rel.split('/').any(|c| c == "..") {
            return Err(format!("gcov counts: unexpected path {}", f.path));
        }
        let dest = into.join(rel);
        if let Some(d) = dest.parent() {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        std::fs::write(&dest, &f.bytes).map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    Ok(files.len())
}
