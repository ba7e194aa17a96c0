//! How long each job took the last time it ran on this machine, so the
//! matrix starts the longest first (longest-processing-time order: no
//! worker is left alone with a long job at the end while the others
//! wait).
//!
//! In: the cache, and a run's finished [`CaseResult`]s. Out: a map from
//! a job's id (`suite/case@variant`) to seconds (`total_s`: boot or
//! restore, steps, shutdown), kept in `<cache>/job-durations.json` and
//! updated after every run with the jobs it finished. A missing or
//! unreadable file is an empty map: the order is then the file order,
//! with stress durations (`fixed_seconds`) first.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use crate::cache::Cache;
use crate::record::CaseResult;

/// Job id -> seconds it took last time.
pub type Estimates = BTreeMap<String, f64>;

fn path(cache: &Cache) -> PathBuf {
    cache.dir("job-durations.json")
}

/// What the last runs recorded (empty when nothing was, or the file is
/// not readable).
pub fn load(cache: &Cache) -> Estimates {
    std::fs::read(path(cache))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Adds a run's finished jobs to what is recorded (written to a temporary
/// file and renamed over the old one: a reader sees one or the other).
pub fn record(cache: &Cache, results: &[CaseResult]) -> Result<()> {
    record_times(cache, results.iter().map(|r| (r.id.as_str(), r.total_s)))
}

fn record_times<'a>(cache: &Cache, times: impl IntoIterator<Item = (&'a str, f64)>) -> Result<()> {
    let mut e = load(cache);
    let before = e.clone();
    for (id, s) in times {
        if s.is_finite() && s > 0.0 {
            e.insert(id.to_string(), s);
        }
    }
    if e == before {
        return Ok(());
    }
    let p = path(cache);
    let dir = p.parent().expect("the cache file has a parent");
    std::fs::create_dir_all(dir)?;
    let mut t = tempfile::NamedTempFile::new_in(dir)?;
    t.write_all(&serde_json::to_vec_pretty(&e)?)?;
    t.persist(&p)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_adds_to_what_is_recorded() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(d.path().to_path_buf()).unwrap();
        assert!(load(&cache).is_empty());
        record_times(&cache, [("s/a@v", 3.0), ("s/b@v", 250.0)]).unwrap();
        record_times(&cache, [("s/a@v", 4.5), ("s/c@v", 0.0)]).unwrap();
        let e = load(&cache);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e["s/a@v"], 4.5);
        assert_eq!(e["s/b@v"], 250.0);
        // Damaged: as if nothing were recorded.
        std::fs::write(path(&cache), "{not json").unwrap();
        assert!(load(&cache).is_empty());
    }
}
