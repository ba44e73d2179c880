//! `lower-1x1-conv`: the lesson's `Y = K(c_o, c_i) @ X(c_i, h*w)`.
//!
//! A 2-D Conv with a 1x1 kernel is a fully connected layer applied at every pixel. It becomes
//!   [Pad (padding)] -> [Slice (stride > 1)] -> Reshape [N, C, H*W] -> MatMul W(M, C)
//!   -> [Add bias (M, 1)] -> Reshape [N, M, H', W'],
//! the batch copied through Reshape's 0 so a symbolic batch keeps working. A 1x1 kernel
//! reads the padded input at every stride-th pixel, so padding is a Pad (zeros, as Conv
//! pads) and a stride a Slice with that step. With g > 1 groups the product is batched over
//! the groups: X reshaped to [N, g, C/g, H*W] and W to (g, M/g, C/g), MatMul broadcasting
//! W over the batch, giving [N, g, M/g, H*W], whose row-major order is the M channels in
//! order. A Conv the pass cannot lower stays as it is, with a note saying why.

use super::{Notes, PassOptions};
use crate::ir::{check, BinaryOp, ConvAttrs, Graph, NameGen, Node, Op, PadAttrs, PadMode};
use crate::tensor::Tensor;
use anyhow::{anyhow, Context, Result};

pub fn run(graph: &mut Graph, _opts: &PassOptions, notes: &mut Notes) -> Result<bool> {
    let facts = check(graph)?;
    let mut names = NameGen::new(graph);
    let mut changed = false;
    let mut nodes = Vec::with_capacity(graph.nodes.len());
    for node in std::mem::take(&mut graph.nodes) {
        let Op::Conv(attrs) = &node.op else {
            nodes.push(node);
            continue;
        };
        let shape_of = |i: usize| {
            node.input(i)
                .and_then(|n| facts.get(n))
                .and_then(|f| f.shape.clone())
        };
        let (Some(x), Some(w)) = (shape_of(0), shape_of(1)) else {
            notes.push(format!("{}: not lowered: input shapes unknown", node.name));
            nodes.push(node);
            continue;
        };
        let out_shape = facts.get(&node.outputs[0]).and_then(|f| f.shape.clone());
        match why_not(
            &x,
            &w,
            graph.constants.contains_key(node.input(1).unwrap_or("")),
        ) {
            Some(reason) => {
                notes.push(format!("{}: not lowered: {reason}", node.name));
                nodes.push(node);
            }
            None => {
                let out =
                    out_shape.ok_or_else(|| anyhow!("{}: output shape unknown", node.name))?;
                lower(graph, &mut names, &node, attrs, &x, &w, &out, &mut nodes)
                    .with_context(|| format!("node '{}' (Conv)", node.name))?;
                changed = true;
            }
        }
    }
    graph.nodes = nodes;
    // The 4-D weights of lowered Convs now live on as (M, C) copies.
    graph.remove_unused_constants();
    Ok(changed)
}

/// Why this Conv cannot be lowered, or `None` when it can.
fn why_not(x: &[usize], w: &[usize], weight_is_const: bool) -> Option<String> {
    if x.len() != 4 {
        return Some(format!(
            "input rank {} (only 2-D convolutions are lowered)",
            x.len()
        ));
    }
    if w[2] != 1 || w[3] != 1 {
        return Some(format!("kernel {}x{} is not 1x1", w[2], w[3]));
    }
    if !weight_is_const {
        return Some("its weight is not a constant".into());
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn lower(
    graph: &mut Graph,
    names: &mut NameGen,
    node: &Node,
    a: &ConvAttrs,
    x: &[usize],
    w: &[usize],
    out: &[usize],
    nodes: &mut Vec<Node>,
) -> Result<()> {
    let base = &node.name;
    let (c, m, g) = (x[1], w[0], a.group);
    if g == 0 || c % g != 0 || m % g != 0 {
        return Err(anyhow!("{c} input and {m} output channels in {g} groups"));
    }
    // Pads and strides resolved as the Conv kernel resolves them (SAME included).
    let geom = a.window.resolve(&x[2..], &w[2..], false)?;
    let konst = |graph: &mut Graph, names: &mut NameGen, suffix: &str, t: Tensor| {
        let name = names.fresh(&format!("{base}.{suffix}"));
        graph.constants.insert(name.clone(), t);
        name
    };
    let mut input = node.inputs[0].clone();
    let mut push = |names: &mut NameGen, op: Op, suffix: &str, inputs: Vec<String>| {
        let out = names.fresh(&format!("{base}.{suffix}"));
        nodes.push(Node {
            name: out.clone(),
            op,
            inputs,
            outputs: vec![out.clone()],
        });
        out
    };

    if geom.has_padding() {
        // ONNX pads order: begins of every axis, then ends; N and C are not padded.
        let (b, e) = (&geom.pads_begin, &geom.pads_end);
        let pads: Vec<i64> = [0, 0, b[0], b[1], 0, 0, e[0], e[1]]
            .iter()
            .map(|&p| p as i64)
            .collect();
        let pads = konst(graph, names, "pads", Tensor::from_vec(&[8], pads)?);
        let pad = Op::Pad(PadAttrs {
            mode: PadMode::Constant,
            pads: None,
            value: 0.0,
        });
        input = push(names, pad, "padded", vec![input, pads]);
    }
    // Stride: keep every s-th row and column; then the conv is stride 1.
    let strides = geom.strides.clone();
    if strides.iter().any(|&s| s > 1) {
        let starts = konst(
            graph,
            names,
            "starts",
            Tensor::from_vec(&[2], vec![0i64, 0])?,
        );
        let ends = konst(
            graph,
            names,
            "ends",
            Tensor::from_vec(&[2], vec![i64::MAX, i64::MAX])?,
        );
        let axes = konst(graph, names, "axes", Tensor::from_vec(&[2], vec![2i64, 3])?);
        let steps = konst(
            graph,
            names,
            "steps",
            Tensor::from_vec(&[2], strides.iter().map(|&s| s as i64).collect())?,
        );
        input = push(
            names,
            Op::Slice,
            "strided",
            vec![input, starts, ends, axes, steps],
        );
    }
    // Group 1 keeps the lesson's plain (M, C) @ (N, C, H*W).
    let (flat, w_shape, b_shape): (Vec<i64>, Vec<usize>, Vec<usize>) = if g == 1 {
        (vec![0, c as i64, -1], vec![m, c], vec![m, 1])
    } else {
        let (cg, mg) = (c / g, m / g);
        (
            vec![0, g as i64, cg as i64, -1],
            vec![g, mg, cg],
            vec![g, mg, 1],
        )
    };
    let flat_shape = konst(
        graph,
        names,
        "flat_shape",
        Tensor::from_vec(&[flat.len()], flat)?,
    );
    let flat = push(
        names,
        Op::Reshape { allowzero: false },
        "flat",
        vec![input, flat_shape],
    );

    let weight = graph.constants[node.input(1).expect("checked")]
        .clone()
        .reshape(&w_shape)?;
    let weight = konst(graph, names, "weight", weight);
    let mut y = push(names, Op::MatMul, "matmul", vec![weight, flat]);
    if let Some(b) = node.input(2) {
        let bias = match graph.constants.get(b) {
            Some(t) => konst(graph, names, "bias", t.clone().reshape(&b_shape)?),
            None => {
                let shape = konst(
                    graph,
                    names,
                    "bias_shape",
                    Tensor::from_vec(
                        &[b_shape.len()],
                        b_shape.iter().map(|&d| d as i64).collect(),
                    )?,
                );
                push(
                    names,
                    Op::Reshape { allowzero: false },
                    "bias",
                    vec![b.to_string(), shape],
                )
            }
        };
        y = push(names, Op::Binary(BinaryOp::Add), "add_bias", vec![y, bias]);
    }
    let out_shape = konst(
        graph,
        names,
        "out_shape",
        Tensor::from_vec(&[4], vec![0i64, m as i64, out[2] as i64, out[3] as i64])?,
    );
    // The last node keeps the Conv's output name, so consumers and graph outputs are untouched.
    nodes.push(Node {
        name: names.fresh(&format!("{base}.unflat")),
        op: Op::Reshape { allowzero: false },
        inputs: vec![y, out_shape],
        outputs: node.outputs.clone(),
    });
    Ok(())
}
