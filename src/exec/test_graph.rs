//! Small graph builders for the interpreter's unit tests (plan, fusions, in-place runs).

use crate::ir::{Dim, Graph, Node, Op, ValueDecl};
use crate::kernels;
use crate::tensor::{DType, Tensor};
use std::collections::HashMap;

/// An f32 value declaration of fixed shape.
pub(crate) fn decl(n: &str, dims: &[usize]) -> ValueDecl {
    ValueDecl {
        name: n.into(),
        dtype: DType::F32,
        dims: Some(dims.iter().map(|&d| Dim::Fixed(d)).collect()),
        wrappers: vec![],
    }
}

/// A node with one output.
pub(crate) fn node(name: &str, op: Op, inputs: &[&str], output: &str) -> Node {
    Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: vec![output.into()],
    }
}

/// Deterministic f32 values spread over `[-amp, amp)` in steps of `amp / 500`.
pub(super) fn values(shape: &[usize], seed: u32, amp: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / (500.0 / amp) - amp)
        .collect();
    Tensor::from_vec(shape, v).unwrap()
}

/// Every node of `g` (one output each) by `kernels::eval` on graph input `x`, every value
/// kept: the reference the fused, in-place and extended runs are checked against.
pub(super) fn reference(g: &Graph, x: &Tensor) -> HashMap<String, Tensor> {
    let mut vals: HashMap<String, Tensor> = g.constants.clone().into_iter().collect();
    vals.insert("x".into(), x.clone());
    for n in &g.nodes {
        let ins: Vec<Option<&Tensor>> = n.inputs.iter().map(|i| vals.get(i)).collect();
        let out = kernels::eval(&n.op, &ins, 1).unwrap().pop().unwrap();
        vals.insert(n.outputs[0].clone(), out);
    }
    vals
}
