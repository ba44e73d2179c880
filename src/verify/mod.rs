//! Checking numbers: the tolerance rule of DESIGN.md (`tolerance.rs`), tract as a reference
//! runtime (`tract.rs`), comparisons of two runs over input samples (`compare.rs`) and the
//! first diverging tensor when they disagree (`divergence.rs`).

pub mod compare;
pub mod conformance;
pub mod divergence;
pub mod tolerance;
pub mod tract;

pub use compare::{
    check_same_inputs, compare_graphs, compare_with_tract, seeded_samples, verify_passes,
    Comparison, Inputs, OutputComparison,
};
pub use divergence::{first_divergence, Divergence};
pub use tolerance::{compare, Report, Tolerance};
