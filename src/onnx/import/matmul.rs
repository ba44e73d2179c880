//! MatMul and Gemm.

use super::NodeCtx;
use crate::ir::{GemmAttrs, Op};
use anyhow::Result;

pub fn matmul(_ctx: &NodeCtx) -> Result<Op> {
    Ok(Op::MatMul)
}

pub fn gemm(ctx: &NodeCtx) -> Result<Op> {
    Ok(Op::Gemm(GemmAttrs {
        alpha: ctx.get_float("alpha", 1.0)?,
        beta: ctx.get_float("beta", 1.0)?,
        trans_a: ctx.get_bool("transA", false)?,
        trans_b: ctx.get_bool("transB", false)?,
    }))
}
