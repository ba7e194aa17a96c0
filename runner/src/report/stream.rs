//! `results.jsonl`: a record sink that appends each finished case to the
//! results directory as one JSON line, flushed at once, so a run that
//! stops early keeps what it finished.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

use crate::record::{CaseResult, RecordSink};

pub const FILE: &str = "results.jsonl";

pub struct ResultsJsonl {
    path: PathBuf,
    file: Mutex<File>,
}

impl ResultsJsonl {
    /// Creates (truncates) `<dir>/results.jsonl`.
    pub fn create(dir: &Path) -> Result<ResultsJsonl> {
        let path = dir.join(FILE);
        let file =
            File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(ResultsJsonl {
            path,
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl RecordSink for ResultsJsonl {
    fn case_finished(&self, r: &CaseResult) {
        let Ok(line) = serde_json::to_string(r) else {
            return;
        };
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // One write per line: concurrent workers never interleave.
        let _ = f.write_all(format!("{line}\n").as_bytes());
        let _ = f.flush();
    }
}

/// Reads back what a run streamed (a torn last line is skipped).
pub fn read(path: &Path) -> Result<Vec<CaseResult>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata::*;

    #[test]
    fn finished_cases_are_appended_as_they_come_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let s = ResultsJsonl::create(d.path()).unwrap();
        let r = sample();
        for c in &r.results {
            s.case_finished(c);
            // Each line is on disk as soon as its case finished.
            let now = read(s.path()).unwrap();
            assert_eq!(now.last().map(|x| &x.id), Some(&c.id));
        }
        let back = read(s.path()).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&r.results).unwrap()
        );
        // A torn last line (the runner killed mid-write) loses only itself.
        let mut text = std::fs::read_to_string(s.path()).unwrap();
        text.push_str("{\"id\": \"trunc");
        std::fs::write(s.path(), text).unwrap();
        assert_eq!(read(s.path()).unwrap().len(), r.results.len());
    }
}
