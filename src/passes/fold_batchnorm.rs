//! `fold-batchnorm`: a BatchNormalization that follows a Conv folds into the Conv's weight
//! and bias, onnxoptimizer's `fuse_bn_into_conv`. Per output channel o, with
//! `s[o] = scale[o] / sqrt(var[o] + eps)`:
//!   `w'[o] = w[o] * s[o]`, `b'[o] = (b[o] - mean[o]) * s[o] + B[o]` (`b` = 0 when absent).
//! It applies only when the Conv's output has that single use and is not a graph output
//! (otherwise the unnormalized value is still needed) and every tensor involved is a
//! constant; anything else stays, with a note saying why.

use super::{Notes, PassOptions};
use crate::ir::{Graph, NameGen, Op};
use crate::tensor::Tensor;
use anyhow::Result;

/// A fold worked out for one BatchNormalization: the Conv it goes into and the new tensors.
struct Fold {
    conv: usize,
    weight: Tensor,
    bias: Tensor,
}

pub fn run(graph: &mut Graph, _opts: &PassOptions, notes: &mut Notes) -> Result<bool> {
    let mut names = NameGen::new(graph);
    let mut changed = false;
    let mut i = 0;
    while i < graph.nodes.len() {
        let Op::BatchNorm { epsilon } = graph.nodes[i].op else {
            i += 1;
            continue;
        };
        match plan(graph, i, epsilon) {
            Err(reason) => {
                notes.push(format!("{}: not folded: {reason}", graph.nodes[i].name));
                i += 1;
            }
            Ok(f) => {
                let bn = graph.nodes.remove(i);
                let conv = &graph.nodes[f.conv];
                let (w, b) = (
                    names.fresh(&format!("{}.weight_bn", conv.name)),
                    names.fresh(&format!("{}.bias_bn", conv.name)),
                );
                graph.constants.insert(w.clone(), f.weight);
                graph.constants.insert(b.clone(), f.bias);
                let conv = &mut graph.nodes[f.conv];
                conv.inputs = vec![conv.inputs[0].clone(), w, b];
                // The Conv now produces the normalized value under the BatchNorm's name, so
                // its readers and graph outputs are untouched; the old name had no other use.
                conv.outputs = bn.outputs;
                changed = true;
                // Index i now holds the node after the BatchNorm: look at it next.
            }
        }
    }
    // The original weights and BN parameters, unless something else reads them.
    graph.remove_unused_constants();
    Ok(changed)
}

/// The fold for the BatchNormalization at `bn`, or why there is none.
fn plan(graph: &Graph, bn: usize, epsilon: f32) -> Result<Fold, String> {
    let node = &graph.nodes[bn];
    if node.outputs.len() != 1 {
        return Err("it has more than one output (training mode)".into());
    }
    let x = node.input(0).ok_or("it has no input")?;
    let conv = graph
        .producer(x)
        .filter(|&p| matches!(graph.nodes[p].op, Op::Conv(_)))
        .ok_or("its input is not produced by a Conv")?;
    if graph.is_output(x) {
        return Err(format!("the Conv output '{x}' is also a graph output"));
    }
    let uses = graph.consumers().get(x).map_or(0, Vec::len);
    if uses != 1 {
        return Err(format!("the Conv output '{x}' has {uses} uses"));
    }
    let konst = |n: &crate::ir::Node, i: usize, what: &str| -> Result<&Tensor, String> {
        n.input(i)
            .and_then(|name| graph.constants.get(name))
            .ok_or_else(|| format!("{what} is not a constant"))
    };
    let c = &graph.nodes[conv];
    let w = konst(c, 1, "the Conv weight")?;
    let b = match c.input(2) {
        Some(_) => Some(konst(c, 2, "the Conv bias")?),
        None => None,
    };
    let [scale, shift, mean, var] = [
        konst(node, 1, "scale")?,
        konst(node, 2, "B")?,
        konst(node, 3, "mean")?,
        konst(node, 4, "var")?,
    ];
    if !w.dtype().is_float() {
        return Err(format!("the Conv weight is {}, not a float", w.dtype()));
    }
    let m = *w.shape().first().ok_or("the Conv weight is a scalar")?;
    let per_channel = [Some(scale), Some(shift), Some(mean), Some(var), b];
    if let Some(t) = per_channel.iter().flatten().find(|t| t.len() != m) {
        return Err(format!(
            "a per-channel tensor has shape {:?}, expected {m} values",
            t.shape()
        ));
    }
    // In f64, then rounded once to the weight's dtype.
    let eps = epsilon as f64;
    let s: Vec<f64> = scale
        .to_f64_vec()
        .iter()
        .zip(var.to_f64_vec())
        .map(|(sc, v)| sc / (v + eps).sqrt())
        .collect();
    let per = w.len().checked_div(m).unwrap_or(0);
    let weight: Vec<f64> = w
        .to_f64_vec()
        .iter()
        .enumerate()
        .map(|(k, v)| v * s[k / per])
        .collect();
    let b0 = b.map_or(vec![0.0; m], Tensor::to_f64_vec);
    let (mean, shift) = (mean.to_f64_vec(), shift.to_f64_vec());
    let bias: Vec<f64> = (0..m)
        .map(|o| (b0[o] - mean[o]) * s[o] + shift[o])
        .collect();
    let tensor = |shape: &[usize], v: Vec<f64>| {
        Tensor::from_vec(shape, v)
            .map(|t| t.cast(w.dtype()))
            .map_err(|e| e.to_string())
    };
    Ok(Fold {
        conv,
        weight: tensor(w.shape(), weight)?,
        bias: tensor(&[m], bias)?,
    })
}
