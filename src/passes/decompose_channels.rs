//! `decompose-channels`: the lesson's own reading of a convolution. A Conv with c_i input and
//! c_o output channels is, per output channel o, the sum over input channels i of the
//! single-channel cross-correlations of X[:, i] with w[o, i], plus the bias, and the c_o
//! results stacked along the channel axis (`corr2d_multi_in` and `corr2d_multi_in_out`):
//!
//!   Slice X[:, i:i+1] (once per input channel)
//!   -> Conv with kernel w[o, i] of shape (1, 1, k...) (per o and i)
//!   -> Add chain over i -> [Add b[o]] -> Squeeze axis 1 -> Stack axis 1 (all o).
//!
//! A grouped Conv decomposes within its groups: output channel o of group g reads only the
//! group's input channels. The node count grows as c_o * c_i / group, so a Conv whose
//! decomposition exceeds `PassOptions::max_nodes` is refused with an error naming it, rather
//! than turning a real model into millions of nodes. The weight and bias must be constants
//! (the kernels become separate constants); a Conv whose are not stays, with a note.

use super::{Notes, PassOptions};
use crate::ir::{check, BinaryOp, ConvAttrs, Facts, Graph, NameGen, Node, Op};
use crate::kernels::layout::{slice, AxisSlice};
use crate::tensor::Tensor;
use anyhow::{bail, Result};

/// What decomposing one Conv takes: its channel counts and the nodes it will become.
struct Plan {
    c: usize,
    m: usize,
    group: usize,
    bias: bool,
}

impl Plan {
    /// Slices + single-channel Convs + Adds of the sums + bias Adds + Squeezes + one Stack.
    fn node_count(&self) -> usize {
        let cg = self.c / self.group;
        self.c + self.m * cg + self.m * (cg - 1) + if self.bias { self.m } else { 0 } + self.m + 1
    }
}

pub fn run(graph: &mut Graph, opts: &PassOptions, notes: &mut Notes) -> Result<bool> {
    let facts = check(graph)?;
    // Plan (and refuse) before touching the graph, so an error leaves it as it was.
    let mut plans = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let Op::Conv(a) = &node.op else {
            plans.push(None);
            continue;
        };
        match plan(graph, &facts, node, a) {
            Err(reason) => {
                notes.push(format!("{}: not decomposed: {reason}", node.name));
                plans.push(None);
            }
            Ok(p) => {
                let n = p.node_count();
                if n > opts.max_nodes {
                    bail!(
                        "node '{}' (Conv): decomposing {} output x {} input channels (group {}) takes {n} nodes, more than the budget of {} (--max-nodes)",
                        node.name,
                        p.m,
                        p.c,
                        p.group,
                        opts.max_nodes
                    );
                }
                plans.push(Some(p));
            }
        }
    }
    let mut names = NameGen::new(graph);
    let mut nodes = Vec::with_capacity(graph.nodes.len());
    let mut changed = false;
    for (node, p) in std::mem::take(&mut graph.nodes).into_iter().zip(plans) {
        match (&node.op, p) {
            (Op::Conv(a), Some(p)) => {
                decompose(graph, &mut names, &node, a, &p, &mut nodes)?;
                changed = true;
            }
            _ => nodes.push(node),
        }
    }
    graph.nodes = nodes;
    graph.remove_unused_constants();
    Ok(changed)
}

fn plan(graph: &Graph, facts: &Facts, node: &Node, a: &ConvAttrs) -> Result<Plan, String> {
    let shape = |i: usize| {
        node.input(i)
            .and_then(|n| facts.get(n))
            .and_then(|f| f.shape.clone())
    };
    let x = shape(0).ok_or("the input shape is unknown")?;
    let w = node
        .input(1)
        .and_then(|n| graph.constants.get(n))
        .ok_or("its weight is not a constant")?;
    let bias = match node.input(2) {
        None => false,
        Some(b) if graph.constants.contains_key(b) => true,
        Some(_) => return Err("its bias is not a constant".into()),
    };
    if x.len() < 3 || w.rank() != x.len() {
        return Err(format!(
            "input rank {} (needs N, C and spatial axes)",
            x.len()
        ));
    }
    let (c, m, group) = (x[1], w.shape()[0], a.group);
    if group == 0 || c % group != 0 || m % group != 0 || c == 0 || m == 0 {
        return Err(format!(
            "{c} input and {m} output channels in {group} groups"
        ));
    }
    Ok(Plan { c, m, group, bias })
}

fn decompose(
    graph: &mut Graph,
    names: &mut NameGen,
    node: &Node,
    a: &ConvAttrs,
    p: &Plan,
    nodes: &mut Vec<Node>,
) -> Result<()> {
    let base = node.name.clone();
    let w = graph.constants[node.input(1).expect("planned")].clone();
    let b = node.input(2).map(|b| graph.constants[b].clone());
    let x = node.inputs[0].clone();
    let mut konst = |names: &mut NameGen, suffix: String, t: Tensor| {
        let name = names.fresh(&format!("{base}.{suffix}"));
        graph.constants.insert(name.clone(), t);
        name
    };
    let mut push = |names: &mut NameGen, op: Op, suffix: String, inputs: Vec<String>| {
        let out = names.fresh(&format!("{base}.{suffix}"));
        nodes.push(Node {
            name: out.clone(),
            op,
            inputs,
            outputs: vec![out.clone()],
        });
        out
    };
    let at = |axis: usize, start: usize| AxisSlice {
        axis,
        start: start as i64,
        step: 1,
        len: 1,
    };

    // X[:, i:i+1] for every input channel, shared by all output channels that read it.
    let axes = konst(names, "axes".into(), Tensor::from_vec(&[1], vec![1i64])?);
    let mut channels = Vec::with_capacity(p.c);
    for i in 0..p.c {
        let starts = konst(
            names,
            format!("start{i}"),
            Tensor::from_vec(&[1], vec![i as i64])?,
        );
        let ends = konst(
            names,
            format!("end{i}"),
            Tensor::from_vec(&[1], vec![i as i64 + 1])?,
        );
        channels.push(push(
            names,
            Op::Slice,
            format!("x{i}"),
            vec![x.clone(), starts, ends, axes.clone()],
        ));
    }
    let single = Op::Conv(ConvAttrs {
        window: a.window.clone(),
        group: 1,
    });
    let (cg, mg) = (p.c / p.group, p.m / p.group);
    let mut per_output = Vec::with_capacity(p.m);
    for o in 0..p.m {
        let first = (o / mg) * cg;
        let mut sum: Option<String> = None;
        for i in 0..cg {
            let k = konst(names, format!("w{o}_{i}"), slice(&w, &[at(0, o), at(1, i)]));
            let y = push(
                names,
                single.clone(),
                format!("y{o}_{}", first + i),
                vec![channels[first + i].clone(), k],
            );
            // Summed in channel order, as the lesson's `sum(...)` does.
            sum = Some(match sum {
                None => y,
                Some(s) => push(
                    names,
                    Op::Binary(BinaryOp::Add),
                    format!("sum{o}_{i}"),
                    vec![s, y],
                ),
            });
        }
        let mut y = sum.expect("cg >= 1 (planned)");
        if let Some(b) = &b {
            let bo = konst(names, format!("b{o}"), slice(b, &[at(0, o)]));
            y = push(
                names,
                Op::Binary(BinaryOp::Add),
                format!("bias{o}"),
                vec![y, bo],
            );
        }
        per_output.push(push(
            names,
            Op::Squeeze {
                axes: Some(vec![1]),
            },
            format!("out{o}"),
            vec![y],
        ));
    }
    // The Stack keeps the Conv's output name, so readers and graph outputs are untouched.
    nodes.push(Node {
        name: names.fresh(&format!("{base}.stack")),
        op: Op::Stack { axis: 1 },
        inputs: per_output,
        outputs: node.outputs.clone(),
    });
    Ok(())
}
