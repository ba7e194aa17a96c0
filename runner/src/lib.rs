//! coexist: the pipeline as a library, one module per stage:
//! variant -> kernel build -> image -> VM -> agent steps -> verdicts -> reports.
//! `main.rs` is the CLI on top.

pub mod accel;
pub mod bisect;
pub mod cache;
pub mod fixtures;
pub mod guest;
pub mod image;
pub mod kbuild;
pub mod kconfig;
pub mod matrix;
pub mod procs;
pub mod report;
pub mod series;
pub mod source;
pub mod splat;
pub mod suite;
pub mod ui;
pub mod variant;
pub mod verdict;
pub mod vm;
