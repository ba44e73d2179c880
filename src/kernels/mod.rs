//! The math: free functions over ndarray arrays, one file per op family, plus each family's
//! `eval` adapter from an IR op and its input tensors to output tensors.
//!
//! Kernels use rayon's current pool for parallelism and split work into chunks whose
//! boundaries do not depend on the number of threads, so results are the same bits for any
//! `--threads` (see ARCHITECTURE.md, "Determinism").

pub mod activation;
pub mod blocked;
pub mod conv;
#[cfg(test)]
mod conv_affine_tests;
mod conv_direct;
#[cfg(target_arch = "x86_64")]
mod conv_direct_avx512;
#[cfg(target_arch = "x86_64")]
mod conv_lanes;
#[cfg(target_arch = "x86_64")]
mod conv_lanes_avx512;
pub mod conv_transpose;
mod depthwise;
#[cfg(target_arch = "x86_64")]
mod depthwise_avx2;
mod depthwise_avx512;
#[cfg(target_arch = "x86_64")]
mod depthwise_interleaved;
pub mod elementwise;
pub mod fill;
pub mod gemm;
mod im2col;
pub mod layout;
pub mod matmul;
pub mod norm;
pub(crate) mod par;
pub mod pointwise;
pub mod pool;
mod pool_flat;
mod pool_interleaved;
pub mod reduce;
mod row_product;
pub mod sgemm;
#[cfg(test)]
pub(crate) mod test_data;
#[cfg(target_arch = "x86_64")]
mod transpose_avx2;
pub(crate) mod uninit;
pub mod variadic;
pub(crate) mod vexp;
#[cfg(target_arch = "x86_64")]
mod vexp_simd;
mod winograd;
mod winograd4;

use crate::ir::Op;
use crate::tensor::Tensor;
use anyhow::{anyhow, Result};

/// Runs one op. `inputs[i]` is `None` for an absent optional input. The caller (the
/// interpreter) adds the node's name and op to any error.
pub fn eval(op: &Op, inputs: &[Option<&Tensor>], n_outputs: usize) -> Result<Vec<Tensor>> {
    match op {
        Op::Conv(_) => conv::eval(op, inputs, n_outputs),
        Op::ConvTranspose(_) => conv_transpose::eval(op, inputs, n_outputs),
        Op::LeakyRelu { .. } | Op::HardSigmoid { .. } | Op::PRelu | Op::Dropout => {
            activation::eval(op, inputs, n_outputs)
        }
        Op::Variadic(_) => variadic::eval(op, inputs, n_outputs),
        Op::ConstantOfShape { .. } | Op::Expand => fill::eval(op, inputs, n_outputs),
        Op::MaxPool(_) | Op::AveragePool(_) | Op::GlobalAveragePool | Op::GlobalMaxPool => {
            pool::eval(op, inputs, n_outputs)
        }
        Op::MatMul | Op::Gemm(_) => matmul::eval(op, inputs, n_outputs),
        Op::Unary(_) | Op::Binary(_) | Op::Clip { .. } | Op::Cast { .. } => {
            elementwise::eval(op, inputs, n_outputs)
        }
        Op::BatchNorm { .. }
        | Op::BatchNormTraining { .. }
        | Op::Softmax { .. }
        | Op::SoftmaxFlat { .. }
        | Op::Lrn(_) => norm::eval(op, inputs, n_outputs),
        Op::ReduceMean(_) | Op::ReduceSum(_) => reduce::eval(op, inputs, n_outputs),
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
        | Op::Pad(_) => layout::eval(op, inputs, n_outputs),
    }
}

/// Whether node input `k` of `op`, when it dies at the node, may be handed to the kernel to
/// become the output: the pointwise ops' buffers ([`pointwise::may_run_in_place`]) and the
/// data of view ops (Reshape and kin), which keeps its buffer under a new shape.
pub fn may_run_in_place(op: &Op, k: usize) -> bool {
    pointwise::may_run_in_place(op, k) || (layout::is_view(op) && k == 0)
}

/// Whether `inputs[k]`, as it is, can be taken by [`eval_in_place`].
pub fn can_run_in_place(
    op: &Op,
    fused: Option<pointwise::Fused>,
    inputs: &[Option<&Tensor>],
    k: usize,
) -> bool {
    match layout::is_view(op) {
        true => fused.is_none() && k == 0 && inputs.first().is_some_and(Option::is_some),
        false => pointwise::can_run_in_place(op, fused, inputs, k),
    }
}

/// Runs `op` on input `k` taken as `buf` (`inputs[k]` is `None`); the caller checked
/// [`can_run_in_place`].
pub fn eval_in_place(
    op: &Op,
    fused: Option<pointwise::Fused>,
    buf: Tensor,
    k: usize,
    inputs: &[Option<&Tensor>],
) -> Result<Tensor> {
    match layout::is_view(op) {
        true => layout::eval_owned(op, buf, inputs),
        false => pointwise::eval_in_place(op, fused, buf, k, inputs),
    }
}

/// Input `i`, which the op requires.
pub(crate) fn input<'a>(inputs: &[Option<&'a Tensor>], i: usize, what: &str) -> Result<&'a Tensor> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| anyhow!("missing required input {i} ({what})"))
}
