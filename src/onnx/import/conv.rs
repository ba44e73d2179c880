//! Conv and the pooling ops: the sliding-window geometry shared by all of them.

use super::NodeCtx;
use crate::ir::{ConvAttrs, ConvTransposeAttrs, Op, Padding, PoolAttrs, Window};
use anyhow::{bail, Result};

/// Reads kernel_shape, strides, dilations, pads and auto_pad, checking that the lists agree
/// on the number of spatial axes.
fn window(ctx: &NodeCtx, kernel_required: bool) -> Result<Window> {
    let kernel_shape = ctx.get_usizes("kernel_shape", 1)?;
    if kernel_required && kernel_shape.is_none() {
        bail!("attribute 'kernel_shape' is required");
    }
    let strides = ctx.get_usizes("strides", 1)?.unwrap_or_default();
    let dilations = ctx.get_usizes("dilations", 1)?.unwrap_or_default();
    let pads = ctx.get_usizes("pads", 0)?;
    // The spatial rank, from whichever list gives it first; the others must agree.
    let mut rank = kernel_shape.as_ref().map(|k| k.len());
    for (name, len) in [
        ("strides", (!strides.is_empty()).then_some(strides.len())),
        (
            "dilations",
            (!dilations.is_empty()).then_some(dilations.len()),
        ),
        ("pads", pads.as_ref().map(|p| p.len() / 2)),
    ] {
        if let Some(len) = len {
            match rank {
                Some(r) if r != len => {
                    bail!(
                        "attribute '{name}' has {len} spatial axes, but other attributes have {r}"
                    )
                }
                _ => rank = Some(len),
            }
        }
    }
    if let Some(p) = &pads {
        if p.len() % 2 != 0 {
            bail!("attribute 'pads' = {p:?} must have an even length (begins, then ends)");
        }
    }
    let auto_pad = ctx.get_string("auto_pad", "NOTSET")?;
    let padding = match auto_pad.as_str() {
        "NOTSET" | "" => Padding::Explicit(pads.clone().unwrap_or_default()),
        "SAME_UPPER" => Padding::SameUpper,
        "SAME_LOWER" => Padding::SameLower,
        "VALID" => Padding::Valid,
        other => bail!(
            "attribute 'auto_pad' = '{other}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID"
        ),
    };
    // ONNX forbids pads together with auto_pad; zero pads are harmless, so accept those.
    if !matches!(padding, Padding::Explicit(_))
        && pads.as_ref().is_some_and(|p| p.iter().any(|&x| x != 0))
    {
        bail!("attribute 'pads' cannot be combined with auto_pad = '{auto_pad}'");
    }
    Ok(Window {
        kernel_shape,
        strides,
        dilations,
        padding,
    })
}

pub fn conv(ctx: &NodeCtx) -> Result<Op> {
    let group = ctx.get_int("group", 1)?;
    if group <= 0 {
        bail!("attribute 'group' = {group} must be positive");
    }
    Ok(Op::Conv(ConvAttrs {
        window: window(ctx, false)?,
        group: group as usize,
    }))
}

/// Same window attributes as Conv, plus output_padding and output_shape (whose presence
/// overrides the pads, as ONNX says).
pub fn conv_transpose(ctx: &NodeCtx) -> Result<Op> {
    let group = ctx.get_int("group", 1)?;
    if group <= 0 {
        bail!("attribute 'group' = {group} must be positive");
    }
    Ok(Op::ConvTranspose(ConvTransposeAttrs {
        window: window(ctx, false)?,
        group: group as usize,
        output_padding: ctx.get_usizes("output_padding", 0)?.unwrap_or_default(),
        output_shape: ctx.get_usizes("output_shape", 1)?,
    }))
}

fn pool(ctx: &NodeCtx) -> Result<PoolAttrs> {
    Ok(PoolAttrs {
        window: window(ctx, true)?,
        ceil_mode: ctx.get_bool("ceil_mode", false)?,
        count_include_pad: ctx.get_bool("count_include_pad", false)?,
        column_major_indices: false,
    })
}

/// MaxPool's optional second output, Indices, is computed by the kernel; storage_order says
/// how those indices count the spatial axes.
pub fn max_pool(ctx: &NodeCtx) -> Result<Op> {
    // An Indices output nobody reads is dropped, so the kernel skips computing it.
    ctx.limit_outputs(if ctx.output_used(1) { 2 } else { 1 })?;
    let column_major_indices = match ctx.get_int("storage_order", 0)? {
        0 => false,
        1 => true,
        so => bail!("attribute 'storage_order' = {so} must be 0 (row-major) or 1 (column-major)"),
    };
    Ok(Op::MaxPool(PoolAttrs {
        column_major_indices,
        ..pool(ctx)?
    }))
}

pub fn average_pool(ctx: &NodeCtx) -> Result<Op> {
    // AveragePool has a single output.
    ctx.limit_outputs(1)?;
    Ok(Op::AveragePool(pool(ctx)?))
}

pub fn global_average_pool(_ctx: &NodeCtx) -> Result<Op> {
    Ok(Op::GlobalAveragePool)
}

pub fn global_max_pool(_ctx: &NodeCtx) -> Result<Op> {
    Ok(Op::GlobalMaxPool)
}
