//! convgraph: load ONNX convolution models into a small graph IR, run them with our own
//! interpreter, rewrite them with named passes, and check that the numbers are kept.
//!
//! See ARCHITECTURE.md for the codemap and invariants.

pub mod bench;
pub mod cli;
pub mod exec;
pub mod ir;
pub mod kernels;
pub mod malloc_tuning;
pub mod npy;
pub mod onnx;
pub mod passes;
pub mod snapshot;
pub mod tensor;
pub mod verify;

pub use exec::Runner;
pub use ir::Graph;
pub use tensor::{DType, Tensor};
