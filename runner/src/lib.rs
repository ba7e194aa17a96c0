//! coexist: the pipeline as a library, a folder per stage, plain data
//! between them, one event stream for the terminal and the report writers.
//!
//! ```text
//! variant --build--> kernel --image--> guest --vm--> step outcomes
//!     --run (steps, verdicts)--> case results --report--> report.json, junit, ktap
//! ```
//!
//! | stage | in | out |
//! |---|---|---|
//! | [`setup`] | `.ci/packages`, the sources' packages | the host ready, before any key |
//! | [`build`] | `variants.yaml`, series, fragments, source | [`build::Manifest`] |
//! | [`image`] | manifest, `images/` | [`image::Prepared`] |
//! | [`vm`] | [`vm::VmConfig`], steps | [`vm::Vm`], [`vm::StepOutcome`], [`vm::VmFailure`] |
//! | [`suite`] | `suites/*.yaml` | [`suite::Suite`] |
//! | [`steps`] | a step, its expectation, the answer | mismatches |
//! | [`guest`] | [`image::Prepared`], [`guest::Machine`], snapshots, a plan of steps | a READY [`vm::Vm`], each answer to the caller's judge |
//! | [`run`] | [`run::RunRequest`] | [`run::CaseResult`]s, a [`report::RunReport`] |
//! | [`report`] | [`report::RunReport`] | files, the terminal table |
//!
//! [`events`] is the stream every stage reports through; [`ui`] draws it.
//! [`teardown`] keeps children (QEMU, builds) from outliving the runner;
//! [`input`] and [`text`] hold the checks on what comes in (files) and
//! what is shown (guest text).
//! The `coexist` binary (`src/main.rs`, `src/cli/`) only parses arguments
//! and calls these.

pub mod build;
pub mod coverage;
pub mod explore;
pub mod guest;
pub mod image;
pub mod mutants;
pub mod record;
pub mod report;
pub mod run;
pub mod setup;
pub mod steps;
pub mod suite;
pub mod ui;
pub mod workspace;

pub use workspace::Workspace;

// The core layer (its own crate): every stage may use it, it uses none.
pub use coexist_core::{cache, events, input, process, teardown, text};
// The VM stage (its own crate): it uses the core layer only.
pub use coexist_vm as vm;
