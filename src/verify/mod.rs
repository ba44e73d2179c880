//! Checking numbers: the tolerance rule of DESIGN.md and tract as a reference runtime.

pub mod conformance;
pub mod tolerance;
pub mod tract;

pub use tolerance::{compare, Report, Tolerance};
