//! Elementwise ops, Clip, Cast, and the ops that import as Identity.

use super::NodeCtx;
use crate::ir::{BinaryOp, Op, UnaryOp};
use crate::onnx::tensor_proto::dtype_from_onnx;
use anyhow::{bail, Result};

macro_rules! unary {
    ($($f:ident => $v:ident),* $(,)?) => {
        $(pub fn $f(_ctx: &NodeCtx) -> Result<Op> {
            Ok(Op::Unary(UnaryOp::$v))
        })*
    };
}
unary!(relu => Relu, sigmoid => Sigmoid, tanh => Tanh, exp => Exp, log => Log, neg => Neg,
    abs => Abs, sqrt => Sqrt, reciprocal => Reciprocal, floor => Floor, ceil => Ceil, erf => Erf);

/// Before opset 7, binary ops broadcast only with `broadcast=1`, and an `axis` attribute
/// aligned the second input somewhere other than the right: not numpy semantics.
fn binary(ctx: &NodeCtx, op: BinaryOp) -> Result<Op> {
    if ctx.opset < 7 && ctx.get_int("broadcast", 0)? == 1 && ctx.attr("axis").is_some() {
        bail!("attribute 'axis' with legacy broadcast is not supported");
    }
    Ok(Op::Binary(op))
}

pub fn add(ctx: &NodeCtx) -> Result<Op> {
    binary(ctx, BinaryOp::Add)
}
pub fn sub(ctx: &NodeCtx) -> Result<Op> {
    binary(ctx, BinaryOp::Sub)
}
pub fn mul(ctx: &NodeCtx) -> Result<Op> {
    binary(ctx, BinaryOp::Mul)
}
pub fn div(ctx: &NodeCtx) -> Result<Op> {
    binary(ctx, BinaryOp::Div)
}
pub fn pow(ctx: &NodeCtx) -> Result<Op> {
    binary(ctx, BinaryOp::Pow)
}

/// Opset < 11 carries min/max as attributes; later opsets as optional inputs.
pub fn clip(ctx: &NodeCtx) -> Result<Op> {
    if ctx.opset < 11 {
        Ok(Op::Clip {
            min: ctx.get_float_opt("min")?,
            max: ctx.get_float_opt("max")?,
        })
    } else {
        Ok(Op::Clip {
            min: None,
            max: None,
        })
    }
}

pub fn cast(ctx: &NodeCtx) -> Result<Op> {
    let to = ctx
        .get_int_opt("to")?
        .ok_or_else(|| anyhow::anyhow!("attribute 'to' is required"))?;
    let code = i32::try_from(to)
        .map_err(|_| anyhow::anyhow!("attribute 'to' = {to} is not a data type"))?;
    let to = dtype_from_onnx(code).map_err(|e| anyhow::anyhow!("attribute 'to': {e}"))?;
    Ok(Op::Cast { to })
}

pub fn identity(_ctx: &NodeCtx) -> Result<Op> {
    Ok(Op::Identity)
}

/// Inference-mode Dropout is the identity. Its mask output has no inference meaning we
/// implement, so it must be absent or unread; training mode is refused.
pub fn dropout(ctx: &NodeCtx) -> Result<Op> {
    if ctx.opset < 7 && ctx.get_int("is_test", 0)? == 0 && ctx.attr("is_test").is_some() {
        bail!("attribute 'is_test' = 0 (training mode) is not supported");
    }
    if ctx.has_input(2) {
        match ctx.const_input(2).map(|t| t.to_f64_vec()) {
            Some(v) if v.iter().all(|&x| x == 0.0) => {}
            Some(_) => bail!("training_mode = true is not supported"),
            None => bail!("input 'training_mode' must be a constant false"),
        }
    }
    if ctx.output_used(1) {
        bail!("the mask output is used; only inference Dropout (mask unused) is supported");
    }
    ctx.limit_outputs(1)?;
    // The ratio input has no effect in inference; drop it so the node is a plain Identity.
    let data = ctx.input_name(0).unwrap_or_default();
    ctx.set_inputs(vec![data]);
    Ok(Op::Identity)
}
