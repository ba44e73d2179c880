//! Ops that move data without arithmetic: Concat, (Un)Squeeze, Flatten, Reshape, Transpose,
//! Shape, Gather, Slice, Split, Pad, Expand, ConstantOfShape.

use super::NodeCtx;
use crate::ir::{Op, PadAttrs, PadMode};
use crate::tensor::Tensor;
use anyhow::{bail, Result};

pub fn concat(ctx: &NodeCtx) -> Result<Op> {
    let axis = ctx
        .get_int_opt("axis")?
        .ok_or_else(|| anyhow::anyhow!("attribute 'axis' is required"))?;
    Ok(Op::Concat { axis })
}

/// Axes are an attribute before opset 13 and an input from 13 on; `None` means "from the
/// input".
fn axes_attr(ctx: &NodeCtx, required_before_13: bool) -> Result<Option<Vec<i64>>> {
    let axes = ctx.get_ints("axes")?;
    if ctx.opset < 13 && required_before_13 && axes.is_none() {
        bail!("attribute 'axes' is required before opset 13");
    }
    if axes.is_some() && ctx.has_input(1) {
        bail!("axes given both as attribute and as input");
    }
    Ok(axes)
}

pub fn unsqueeze(ctx: &NodeCtx) -> Result<Op> {
    if ctx.opset >= 13 && !ctx.has_input(1) && ctx.attr("axes").is_none() {
        bail!("input 'axes' is required from opset 13");
    }
    Ok(Op::Unsqueeze {
        axes: axes_attr(ctx, true)?,
    })
}

pub fn squeeze(ctx: &NodeCtx) -> Result<Op> {
    Ok(Op::Squeeze {
        axes: axes_attr(ctx, false)?,
    })
}

pub fn flatten(ctx: &NodeCtx) -> Result<Op> {
    Ok(Op::Flatten {
        axis: ctx.get_int("axis", 1)?,
    })
}

pub fn reshape(ctx: &NodeCtx) -> Result<Op> {
    // Opset < 5 had the shape as an attribute: turn it into the input form.
    if let Some(shape) = ctx.get_ints("shape")? {
        let data = ctx.input_name(0).unwrap_or_default();
        let c = ctx.add_constant(
            &format!("{}_shape", ctx.name),
            Tensor::from_vec(&[shape.len()], shape)?,
        );
        ctx.set_inputs(vec![data, c]);
    }
    Ok(Op::Reshape {
        allowzero: ctx.get_bool("allowzero", false)?,
    })
}

pub fn transpose(ctx: &NodeCtx) -> Result<Op> {
    let perm = ctx.get_usizes("perm", 0)?;
    if let Some(p) = &perm {
        let mut seen = vec![false; p.len()];
        for &a in p {
            if a >= p.len() || std::mem::replace(&mut seen[a], true) {
                bail!("attribute 'perm' = {p:?} is not a permutation");
            }
        }
    }
    Ok(Op::Transpose { perm })
}

pub fn shape(ctx: &NodeCtx) -> Result<Op> {
    Ok(Op::Shape {
        start: ctx.get_int("start", 0)?,
        end: ctx.get_int_opt("end")?,
    })
}

pub fn gather(ctx: &NodeCtx) -> Result<Op> {
    Ok(Op::Gather {
        axis: ctx.get_int("axis", 0)?,
    })
}

/// Before opset 10 starts/ends/axes were attributes; they become constant inputs so that
/// `Op::Slice` has a single form.
pub fn slice(ctx: &NodeCtx) -> Result<Op> {
    if ctx.opset >= 10 {
        return Ok(Op::Slice);
    }
    let get = |n: &str| -> Result<Vec<i64>> {
        ctx.get_ints(n)?
            .ok_or_else(|| anyhow::anyhow!("attribute '{n}' is required before opset 10"))
    };
    let starts = get("starts")?;
    let ends = get("ends")?;
    if starts.len() != ends.len() {
        bail!(
            "attributes 'starts' ({}) and 'ends' ({}) differ in length",
            starts.len(),
            ends.len()
        );
    }
    let axes = ctx.get_ints("axes")?;
    if let Some(a) = &axes {
        if a.len() != starts.len() {
            bail!(
                "attribute 'axes' has {} values, 'starts' has {}",
                a.len(),
                starts.len()
            );
        }
    }
    let data = ctx.input_name(0).unwrap_or_default();
    let mut inputs = vec![data];
    for (what, v) in [
        ("starts", Some(starts)),
        ("ends", Some(ends)),
        ("axes", axes),
    ] {
        if let Some(v) = v {
            let t = Tensor::from_vec(&[v.len()], v)?;
            inputs.push(ctx.add_constant(&format!("{}_{what}", ctx.name), t));
        }
    }
    ctx.set_inputs(inputs);
    Ok(Op::Slice)
}

pub fn split(ctx: &NodeCtx) -> Result<Op> {
    let axis = ctx.get_int("axis", 0)?;
    let split = ctx.get_usizes("split", 0)?;
    if split.is_some() && ctx.has_input(1) {
        bail!("split sizes given both as attribute and as input");
    }
    if let Some(s) = &split {
        if s.len() != ctx.output_count() {
            bail!(
                "attribute 'split' has {} sizes for {} outputs",
                s.len(),
                ctx.output_count()
            );
        }
    }
    if let Some(n) = ctx.get_int_opt("num_outputs")? {
        if n <= 0 || n as usize != ctx.output_count() {
            bail!(
                "attribute 'num_outputs' = {n} but the node has {} outputs",
                ctx.output_count()
            );
        }
    }
    Ok(Op::Split { axis, split })
}

/// Pad: before opset 11 pads (`paddings` in opset 1) and value are attributes; from 11 on
/// they are inputs (pads, optional constant_value, from 18 optional axes), which may be
/// computed at run time, so they stay inputs rather than being folded into attributes.
pub fn pad(ctx: &NodeCtx) -> Result<Op> {
    let mode = match ctx.get_string("mode", "constant")?.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        other => bail!("attribute 'mode' = '{other}' is not constant, reflect, edge or wrap"),
    };
    if ctx.opset >= 11 {
        if !ctx.has_input(1) {
            bail!("input 'pads' is required from opset 11");
        }
        ctx.refuse_attr("pads", "from opset 11 pads are an input")?;
        return Ok(Op::Pad(PadAttrs {
            mode,
            pads: None,
            value: 0.0,
        }));
    }
    let pads = match ctx.get_ints("pads")? {
        Some(p) => p,
        None => ctx
            .get_ints("paddings")?
            .ok_or_else(|| anyhow::anyhow!("attribute 'pads' is required before opset 11"))?,
    };
    if pads.len() % 2 != 0 {
        bail!("attribute 'pads' = {pads:?} has an odd number of values");
    }
    Ok(Op::Pad(PadAttrs {
        mode,
        pads: Some(pads),
        value: ctx.get_float("value", 0.0)? as f64,
    }))
}

/// The fill value: a one-element tensor attribute, by default a float 0.
pub fn constant_of_shape(ctx: &NodeCtx) -> Result<Op> {
    let value = match ctx.attr("value") {
        None => Tensor::from_vec(&[1], vec![0f32])?,
        Some(a) => {
            let t =
                a.t.as_ref()
                    .ok_or_else(|| anyhow::anyhow!("attribute 'value' holds no tensor"))?;
            crate::onnx::tensor_proto::tensor_from_proto(t)
                .map_err(|e| anyhow::anyhow!("attribute 'value': {e:#}"))?
        }
    };
    if value.len() != 1 {
        bail!(
            "attribute 'value' must hold one element, has shape {:?}",
            value.shape()
        );
    }
    Ok(Op::ConstantOfShape { value })
}

pub fn expand(_ctx: &NodeCtx) -> Result<Op> {
    Ok(Op::Expand)
}
