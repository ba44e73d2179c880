//! `lower-1x1-conv`: the lesson's `Y = K(c_o, c_i) @ X(c_i, h*w)`.
//!
//! A 2-D Conv with a 1x1 kernel, group 1 and no padding is a fully connected layer applied
//! at every pixel. It becomes
//!   [Slice (stride > 1)] -> Reshape [N, C, H*W] -> MatMul W(M, C) -> [Add bias (M, 1)]
//!   -> Reshape [N, M, H', W'],
//! the batch copied through Reshape's 0 so a symbolic batch keeps working. A Conv the pass
//! cannot lower stays as it is, with a note saying why.

use super::Notes;
use crate::ir::{check, BinaryOp, ConvAttrs, Graph, NameGen, Node, Op, Padding};
use crate::tensor::Tensor;
use anyhow::{anyhow, Result};

pub fn run(graph: &mut Graph, notes: &mut Notes) -> Result<bool> {
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
            attrs,
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
                lower(graph, &mut names, &node, attrs, &x, &w, &out, &mut nodes)?;
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
fn why_not(a: &ConvAttrs, x: &[usize], w: &[usize], weight_is_const: bool) -> Option<String> {
    if x.len() != 4 {
        return Some(format!(
            "input rank {} (only 2-D convolutions are lowered)",
            x.len()
        ));
    }
    if w[2] != 1 || w[3] != 1 {
        return Some(format!("kernel {}x{} is not 1x1", w[2], w[3]));
    }
    if a.group != 1 {
        return Some(format!("group {} (only group 1 is lowered)", a.group));
    }
    let padded = match &a.window.padding {
        Padding::Explicit(p) => p.iter().any(|&p| p != 0),
        // With a 1x1 kernel SAME pads only when the stride does not divide the input.
        Padding::SameUpper | Padding::SameLower => {
            let s = |i: usize| a.window.strides.get(i).copied().unwrap_or(1);
            (0..2).any(|i| s(i) > 1 && !x[2 + i].is_multiple_of(s(i)))
        }
        Padding::Valid => false,
    };
    if padded {
        return Some("it has padding".into());
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
    let (c, m) = (x[1], w[0]);
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

    // Stride: keep every s-th row and column; then the conv is stride 1.
    let strides: Vec<usize> = if a.window.strides.is_empty() {
        vec![1, 1]
    } else {
        a.window.strides.clone()
    };
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
    let flat_shape = konst(
        graph,
        names,
        "flat_shape",
        Tensor::from_vec(&[3], vec![0i64, c as i64, -1])?,
    );
    let flat = push(
        names,
        Op::Reshape { allowzero: false },
        "flat",
        vec![input, flat_shape],
    );

    let weight = graph.constants[node.input(1).expect("checked")]
        .clone()
        .reshape(&[m, c])?;
    let weight = konst(graph, names, "weight", weight);
    let mut y = push(names, Op::MatMul, "matmul", vec![weight, flat]);
    if let Some(b) = node.input(2) {
        let bias = match graph.constants.get(b) {
            Some(t) => konst(graph, names, "bias", t.clone().reshape(&[m, 1])?),
            None => {
                let shape = konst(
                    graph,
                    names,
                    "bias_shape",
                    Tensor::from_vec(&[2], vec![m as i64, 1])?,
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
