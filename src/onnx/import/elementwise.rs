//! Elementwise ops, Clip, Cast, and the ops that import as Identity.

use super::NodeCtx;
use crate::ir::{BinaryOp, Op, UnaryOp, VariadicOp};
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
    abs => Abs, sqrt => Sqrt, reciprocal => Reciprocal, floor => Floor, ceil => Ceil, erf => Erf,
    hard_swish => HardSwish);

/// Before opset 7, binary ops broadcast only with `broadcast=1`, and an `axis` attribute
/// aligned B's dims with A's starting at `axis`. That is numpy's right alignment exactly when
/// B's dims end where A's do (`axis + rank(B) == rank(A)`), which is the form exporters wrote;
/// other alignments would need B reshaped and are refused.
fn binary(ctx: &NodeCtx, op: BinaryOp) -> Result<Op> {
    if ctx.opset < 7 && ctx.get_int("broadcast", 0)? == 1 {
        if let Some(axis) = ctx.get_int_opt("axis")? {
            let (Some(ra), Some(rb)) = (ctx.input_rank(0), ctx.input_rank(1)) else {
                bail!("attribute 'axis' with legacy broadcast needs both input ranks declared");
            };
            let right = ra as i64 - rb as i64;
            // Negative axes count from A's end.
            let axis = if axis < 0 { axis + ra as i64 } else { axis };
            if axis != right {
                bail!(
                    "attribute 'axis' = {axis} aligns B (rank {rb}) away from the right of A (rank {ra}); only axis {right} is supported"
                );
            }
        }
    }
    Ok(Op::Binary(op))
}

pub fn leaky_relu(ctx: &NodeCtx) -> Result<Op> {
    Ok(Op::LeakyRelu {
        alpha: ctx.get_float("alpha", 0.01)?,
    })
}

pub fn hard_sigmoid(ctx: &NodeCtx) -> Result<Op> {
    Ok(Op::HardSigmoid {
        alpha: ctx.get_float("alpha", 0.2)?,
        beta: ctx.get_float("beta", 0.5)?,
    })
}

/// From opset 7 the slope broadcasts numpy-style to X. Before, a 1-D slope of C values meant
/// one value per channel (axis 1): a constant slope is reshaped to `[C, 1, ...]` so that
/// numpy broadcasting does the same.
pub fn prelu(ctx: &NodeCtx) -> Result<Op> {
    if ctx.opset < 7 {
        // A run-time slope's per-channel meaning cannot be rewritten to a broadcast here.
        let Some(t) = ctx.const_input(1) else {
            bail!("before opset 7 the slope must be a constant (its form is per-channel)");
        };
        if t.rank() == 1 && t.len() > 1 {
            let Some(r) = ctx.input_rank(0).filter(|&r| r >= 2) else {
                bail!("a per-channel slope needs X's rank declared (at least 2)");
            };
            let mut shape = vec![t.len()];
            shape.resize(r - 1, 1);
            let reshaped = t.clone().reshape(&shape)?;
            let data = ctx.input_name(0).unwrap_or_default();
            let slope = ctx.add_constant(&format!("{}.slope", ctx.name), reshaped);
            ctx.set_inputs(vec![data, slope]);
        }
    }
    Ok(Op::PRelu)
}

/// Opset < 6 also had `consumed_inputs`, an in-place hint without meaning for results.
fn variadic(ctx: &NodeCtx, v: VariadicOp) -> Result<Op> {
    if ctx.input_count() == 0 || (0..ctx.input_count()).any(|i| !ctx.has_input(i)) {
        bail!("every input must be given (at least one)");
    }
    Ok(Op::Variadic(v))
}

pub fn sum(ctx: &NodeCtx) -> Result<Op> {
    variadic(ctx, VariadicOp::Sum)
}
pub fn mean(ctx: &NodeCtx) -> Result<Op> {
    variadic(ctx, VariadicOp::Mean)
}
pub fn max(ctx: &NodeCtx) -> Result<Op> {
    variadic(ctx, VariadicOp::Max)
}
pub fn min(ctx: &NodeCtx) -> Result<Op> {
    variadic(ctx, VariadicOp::Min)
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

/// Inference Dropout whose mask nobody reads is the identity and imports as Identity. When
/// the mask is read, or training_mode is not a constant false, it is a Dropout node, whose
/// kernel runs the deterministic cases (inference, or ratio 0: mask all true).
pub fn dropout(ctx: &NodeCtx) -> Result<Op> {
    if ctx.opset < 7 && ctx.get_int("is_test", 0)? == 0 && ctx.attr("is_test").is_some() {
        bail!("attribute 'is_test' = 0 (training mode) is not supported");
    }
    let data = ctx.input_name(0).unwrap_or_default();
    // Some(training) when known at import; None when it is a run-time input.
    let training = if ctx.has_input(2) {
        ctx.const_input(2)
            .map(|t| t.to_f64_vec().iter().any(|&x| x != 0.0))
    } else {
        Some(false)
    };
    if training == Some(false) && !ctx.output_used(1) {
        ctx.limit_outputs(1)?;
        // The ratio has no effect in inference; drop it so the node is a plain Identity.
        ctx.set_inputs(vec![data]);
        return Ok(Op::Identity);
    }
    if ctx.opset < 10 && ctx.output_used(1) {
        bail!("the mask output before opset 10 has the data's dtype, which is not supported");
    }
    if training == Some(true) {
        let ratio = match ctx.has_input(1) {
            false => Some(0.5),
            true => ctx
                .const_input(1)
                .and_then(|t| t.to_f64_vec().first().copied()),
        };
        if ratio.is_some_and(|r| r != 0.0) {
            bail!(
                "training_mode = true with ratio {} draws a random mask, which is not supported",
                ratio.unwrap_or_default()
            );
        }
    }
    if training == Some(false) {
        ctx.set_inputs(vec![data]);
    }
    ctx.limit_outputs(2)?;
    Ok(Op::Dropout)
}
