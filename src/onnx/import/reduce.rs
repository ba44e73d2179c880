//! ReduceMean and ReduceSum: axes move from attribute to input at different opsets
//! (ReduceSum at 13, ReduceMean at 18).

use super::NodeCtx;
use crate::ir::{Op, ReduceAttrs};
use anyhow::{bail, Result};

fn reduce(ctx: &NodeCtx, axes_input_from: i64) -> Result<ReduceAttrs> {
    let attr = ctx.get_ints("axes")?;
    if ctx.opset >= axes_input_from && attr.is_some() && ctx.has_input(1) {
        bail!("axes given both as attribute and as input");
    }
    Ok(ReduceAttrs {
        axes: attr,
        keepdims: ctx.get_bool("keepdims", true)?,
        noop_with_empty_axes: ctx.get_bool("noop_with_empty_axes", false)?,
    })
}

pub fn reduce_mean(ctx: &NodeCtx) -> Result<Op> {
    Ok(Op::ReduceMean(reduce(ctx, 18)?))
}

pub fn reduce_sum(ctx: &NodeCtx) -> Result<Op> {
    Ok(Op::ReduceSum(reduce(ctx, 13)?))
}
