//! BatchNormalization, Softmax and LRN.

use super::NodeCtx;
use crate::ir::{LrnAttrs, Op};
use anyhow::{bail, Result};

pub fn batch_norm(ctx: &NodeCtx) -> Result<Op> {
    // Opset < 9: spatial=0 means per-element statistics, a different op.
    if ctx.get_int("spatial", 1)? != 1 {
        bail!("attribute 'spatial' = 0 is not supported");
    }
    let epsilon = ctx.get_float("epsilon", 1e-5)?;
    // training_mode is an attribute from opset 14. Older opsets' training form (is_test = 0
    // before 7, or used extra outputs) also returned saved mean/var outputs whose meaning
    // changed between versions, so only the opset >= 14 form is imported as training.
    let training = match ctx.get_int("training_mode", 0)? {
        0 => false,
        1 if ctx.opset >= 14 => true,
        1 => bail!(
            "attribute 'training_mode' needs opset 14, the model has {}",
            ctx.opset
        ),
        v => bail!("attribute 'training_mode' = {v} must be 0 or 1"),
    };
    if !training {
        // The extra outputs (running mean/var, saved stats) only exist in training.
        ctx.limit_outputs(1)?;
        return Ok(Op::BatchNorm { epsilon });
    }
    // Opset 14+ training outputs: Y, running_mean, running_var.
    ctx.limit_outputs(3)?;
    Ok(Op::BatchNormTraining {
        epsilon,
        momentum: ctx.get_float("momentum", 0.9)?,
    })
}

/// From opset 13 Softmax works along one axis (default -1). Before, it flattened the input
/// to 2D at `axis` (default 1) and normalised each row: the same thing only when `axis` is
/// the last axis, so that is all we accept.
pub fn softmax(ctx: &NodeCtx) -> Result<Op> {
    if ctx.opset >= 13 {
        return Ok(Op::Softmax {
            axis: ctx.get_int("axis", -1)?,
        });
    }
    let axis = ctx.get_int("axis", 1)?;
    let rank = ctx.input_rank(0);
    let last = axis == -1 || rank.is_some_and(|r| axis == r as i64 - 1);
    if !last {
        // The 2-D view; the usual case (a classifier's [N, K] logits with axis 1) would be the
        // one-axis Softmax, but without the rank that cannot be told at import.
        return Ok(Op::SoftmaxFlat { axis });
    }
    Ok(Op::Softmax { axis: -1 })
}

pub fn lrn(ctx: &NodeCtx) -> Result<Op> {
    let size = match ctx.get_int_opt("size")? {
        None => bail!("attribute 'size' is required"),
        Some(s) if s < 1 => bail!("attribute 'size' = {s} must be at least 1"),
        Some(s) => usize::try_from(s)?,
    };
    Ok(Op::Lrn(LrnAttrs {
        alpha: ctx.get_float("alpha", 1e-4)?,
        beta: ctx.get_float("beta", 0.75)?,
        bias: ctx.get_float("bias", 1.0)?,
        size,
    }))
}
