//! The terminal: an [`crate::events::EventSink`] that draws the event
//! stream for people (indicatif bars on a terminal, plain lines in CI).
//! Nothing else in the library writes to the terminal.

pub mod terminal;

pub use terminal::{fmt_duration, Terminal};
