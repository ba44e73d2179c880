//! Shape and dtype rules: each op states its outputs' facts from its inputs' facts before
//! anything runs. One file per op family, mirroring `kernels`.
//!
//! A rule returns an error (naming the problem, not the node: the caller adds node and op)
//! when the inputs are inconsistent: a Conv whose weight has the wrong rank or channel
//! count, a MatMul with mismatched inner dims, and so on. An input whose shape is unknown
//! (`Fact::shape == None`) makes the dependent outputs unknown rather than failing.

mod activation;
mod conv;
mod elementwise;
mod fill;
mod layout;
mod matmul;
mod norm;
mod pool;
mod reduce;

pub(crate) use conv::conv_output_shape;
pub(crate) use pool::window_pool_geometry;

use super::{Fact, Op};
use anyhow::{anyhow, Result};

/// The facts of a node's outputs. `inputs[i]` is `None` for an absent optional input.
pub fn infer(op: &Op, inputs: &[Option<&Fact>], n_outputs: usize) -> Result<Vec<Fact>> {
    match op {
        Op::Conv(_) | Op::ConvTranspose(_) => conv::infer(op, inputs, n_outputs),
        Op::LeakyRelu { .. }
        | Op::HardSigmoid { .. }
        | Op::PRelu
        | Op::Dropout
        | Op::Variadic(_) => activation::infer(op, inputs, n_outputs),
        Op::ConstantOfShape { .. } | Op::Expand => fill::infer(op, inputs, n_outputs),
        Op::MaxPool(_) | Op::AveragePool(_) | Op::GlobalAveragePool | Op::GlobalMaxPool => {
            pool::infer(op, inputs, n_outputs)
        }
        Op::MatMul | Op::Gemm(_) => matmul::infer(op, inputs, n_outputs),
        Op::Unary(_) | Op::Binary(_) | Op::Clip { .. } | Op::Cast { .. } => {
            elementwise::infer(op, inputs, n_outputs)
        }
        Op::BatchNorm { .. }
        | Op::BatchNormTraining { .. }
        | Op::Softmax { .. }
        | Op::SoftmaxFlat { .. }
        | Op::Lrn(_) => norm::infer(op, inputs, n_outputs),
        Op::ReduceMean(_) | Op::ReduceSum(_) => reduce::infer(op, inputs, n_outputs),
        Op::Stack { .. }
        | Op::Concat { .. }
        | Op::Unsqueeze { .. }
        | Op::Squeeze { .. }
        | Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Identity
        | Op::Shape { .. }
        | Op::Gather { .. }
        | Op::Slice
        | Op::Split { .. }
        | Op::Pad(_) => layout::infer(op, inputs, n_outputs),
    }
}

/// Input `i`, which the op requires.
pub(crate) fn input<'a>(inputs: &[Option<&'a Fact>], i: usize, what: &str) -> Result<&'a Fact> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| anyhow!("missing required input {i} ({what})"))
}

/// Normalizes a possibly negative axis against `rank`.
pub(crate) fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        anyhow::bail!("axis {axis} is out of range for rank {rank}");
    }
    Ok(a as usize)
}
