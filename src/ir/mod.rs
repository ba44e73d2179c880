//! The graph IR: values, typed ops, nodes in topological order, what is known about each
//! value before running (facts), a stable printer and a checker.

pub mod analyze;
pub mod check;
mod fact;
mod graph;
pub mod infer;
pub mod op;
pub mod print;
mod value_type;
pub mod window;

pub use analyze::{analyze, DimBindings, Facts};
pub use check::check;
pub use fact::{Fact, MAX_FACT_VALUE_LEN};
pub use graph::{Dim, Graph, NameGen, Node, ValueDecl};
pub use op::{
    BinaryOp, ConvAttrs, ConvTransposeAttrs, GemmAttrs, LrnAttrs, Op, PadAttrs, PadMode, Padding,
    PoolAttrs, ReduceAttrs, UnaryOp, VariadicOp, Window,
};
pub use value_type::{non_tensor_values, Wrapper};
