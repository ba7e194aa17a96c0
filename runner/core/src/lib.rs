//! The core layer under every stage of the pipeline: what any stage may
//! use, and which uses no stage.
//!
//! | module | what |
//! |---|---|
//! | [`cache`] | the cache's layout, locks, keys, atomic writes and publishing |
//! | [`process`] | running host commands: quietly, in a process group, a version line |
//! | [`teardown`] | children (QEMU, builds) never outlive the runner |
//! | [`events`] | the one typed event stream for the terminal and the writers |
//! | [`input`] | checks on what comes in from files (YAML, names, errnos) |
//! | [`text`] | guest text made safe to show |

pub mod cache;
pub mod events;
pub mod input;
pub mod process;
pub mod teardown;
pub mod text;
