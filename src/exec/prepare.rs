//! State built once per plan from the graph's constants, so runs skip work that does not
//! depend on the inputs: Conv weights packed for the sgemm, and, for plain runs only, a Relu
//! or constant Clip fused into the Conv that feeds it.
//!
//! Fusion changes no bits (the Conv's epilogue clamps exactly as the Relu/Clip kernels do,
//! after the bias), but it does skip the Conv's own output tensor, so runs that look at
//! every intermediate value (`run_observed`, used by verify/compare/divergence) or time
//! every node (`run_profiled`) run unfused: the `fuse` flag of the interpreter loop.

use crate::ir::{Graph, Op, UnaryOp};
use crate::kernels::conv;
use crate::kernels::sgemm::Activation;
use crate::tensor::Tensor;
use std::collections::HashMap;

pub struct Prepared {
    /// Per node: the packed weights of a Conv whose weights are a constant.
    pub conv: Vec<Option<conv::Prepared>>,
    /// Per node, fused runs only: the activation this Conv applies to its output.
    pub fused_act: Vec<Option<Activation>>,
    /// Per node, fused runs only: this activation node was fused into the Conv before it;
    /// its output is its first input, moved.
    pub forward: Vec<bool>,
}

impl Prepared {
    pub fn new(graph: &Graph) -> Prepared {
        let n = graph.nodes.len();
        let conv = graph
            .nodes
            .iter()
            .map(|node| match &node.op {
                Op::Conv(attrs) => node
                    .inputs
                    .get(1)
                    .and_then(|w| graph.constants.get(w))
                    .and_then(|w| conv::prepare(attrs, w)),
                _ => None,
            })
            .collect();
        let mut fused_act = vec![None; n];
        let mut forward = vec![false; n];
        // Readers of each value (a node reading it twice counts twice).
        let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (j, node) in graph.nodes.iter().enumerate() {
            for i in node.inputs.iter().filter(|i| !i.is_empty()) {
                readers.entry(i.as_str()).or_default().push(j);
            }
        }
        for (i, node) in graph.nodes.iter().enumerate() {
            let (Op::Conv(_), [out]) = (&node.op, node.outputs.as_slice()) else {
                continue;
            };
            if out.is_empty() || graph.outputs.iter().any(|o| &o.name == out) {
                continue;
            }
            let Some([j]) = readers.get(out.as_str()).map(Vec::as_slice) else {
                continue;
            };
            let next = &graph.nodes[*j];
            if next.inputs.first() != Some(out) || next.outputs.len() != 1 {
                continue;
            }
            if let Some(act) = activation(graph, &next.op, &next.inputs) {
                fused_act[i] = Some(act);
                forward[*j] = true;
            }
        }
        Prepared {
            conv,
            fused_act,
            forward,
        }
    }
}

/// The clamp a Relu or Clip node applies, when its bounds are known before running (Clip's
/// attributes, or its bound inputs when those are f32 scalar constants, read as the Clip
/// kernel reads them).
fn activation(graph: &Graph, op: &Op, inputs: &[String]) -> Option<Activation> {
    match op {
        Op::Unary(UnaryOp::Relu) => Some(Activation::RELU),
        Op::Clip { min, max } => {
            let bound = |i: usize, attr: Option<f32>| -> Option<Option<f32>> {
                match inputs.get(i).filter(|s| !s.is_empty()) {
                    None => Some(attr),
                    Some(name) => match graph.constants.get(name)? {
                        Tensor::F32(t) if t.len() == 1 => Some(t.iter().next().copied()),
                        _ => None,
                    },
                }
            };
            Some(Activation {
                lo: bound(1, *min)?,
                hi: bound(2, *max)?,
            })
        }
        _ => None,
    }
}
