//! `lower-stack`: the inverse of `raise-stack`. `Stack(axis k)` of n inputs becomes n
//! `Unsqueeze(axis k)` nodes and one `Concat(axis k)`.
//!
//! Stack is not an ONNX op, so export runs this first. The Concat keeps the Stack's name and
//! outputs and each Unsqueeze output feeds only it, so `raise-stack` (run by the importer)
//! gives back the same Stack node. The Unsqueeze axes take the form of the graph's opset
//! (attribute before 13, a constant input from 13), the form the importer produces, so an
//! exported and re-imported graph prints the same.

use super::{Notes, PassOptions};
use crate::ir::{Graph, NameGen, Node, Op};
use crate::tensor::Tensor;
use anyhow::{bail, Result};

pub fn run(graph: &mut Graph, _opts: &PassOptions, _notes: &mut Notes) -> Result<bool> {
    lower_stack(graph)
}

/// Lowers every Stack node; returns whether there was one.
pub fn lower_stack(graph: &mut Graph) -> Result<bool> {
    if !graph.nodes.iter().any(|n| matches!(n.op, Op::Stack { .. })) {
        return Ok(false);
    }
    let mut names = NameGen::new(graph);
    let mut nodes = Vec::with_capacity(graph.nodes.len());
    for node in std::mem::take(&mut graph.nodes) {
        let Op::Stack { axis } = node.op else {
            nodes.push(node);
            continue;
        };
        if node.inputs.is_empty() || node.inputs.iter().any(String::is_empty) {
            bail!(
                "node '{}' (Stack): needs at least one input and no absent ones, has {:?}",
                node.name,
                node.inputs
            );
        }
        // One axes constant shared by the node's Unsqueezes, as exporters write it.
        let (axes_attr, axes_input) = if graph.opset >= 13 {
            let c = names.fresh(&format!("{}.axes", node.name));
            graph
                .constants
                .insert(c.clone(), Tensor::from_vec(&[1], vec![axis])?);
            (None, Some(c))
        } else {
            (Some(vec![axis]), None)
        };
        let mut joined = Vec::with_capacity(node.inputs.len());
        for (i, input) in node.inputs.iter().enumerate() {
            let out = names.fresh(&format!("{}.unsqueeze{i}", node.name));
            let mut inputs = vec![input.clone()];
            inputs.extend(axes_input.clone());
            nodes.push(Node {
                name: out.clone(),
                op: Op::Unsqueeze {
                    axes: axes_attr.clone(),
                },
                inputs,
                outputs: vec![out.clone()],
            });
            joined.push(out);
        }
        // Stack's negative axis counts from the back of the output, and so do Unsqueeze's
        // and (on the unsqueezed inputs, of the output's rank) Concat's: the same k fits all.
        nodes.push(Node {
            name: node.name,
            op: Op::Concat { axis },
            inputs: joined,
            outputs: node.outputs,
        });
    }
    graph.nodes = nodes;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{check, print::print, Dim, ValueDecl};
    use crate::passes::raise_stack::raise_stack;
    use crate::tensor::DType;

    fn stack_graph(opset: i64, axis: i64) -> Graph {
        let decl = |n: &str, dims: &[usize]| ValueDecl {
            name: n.into(),
            dtype: DType::F32,
            dims: Some(dims.iter().map(|&d| Dim::Fixed(d)).collect()),
            wrappers: vec![],
        };
        Graph {
            name: "g".into(),
            opset,
            inputs: vec![decl("a", &[2, 3]), decl("b", &[2, 3])],
            outputs: vec![decl("y", &[2, 2, 3])],
            nodes: vec![Node {
                name: "st".into(),
                op: Op::Stack { axis },
                inputs: vec!["a".into(), "b".into(), "a".into()],
                outputs: vec!["y".into()],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn lowers_to_unsqueeze_concat_and_raises_back() {
        for (opset, axis) in [(11, 1), (13, -2), (17, 0)] {
            let g = stack_graph(opset, axis);
            let before = print(&g, &check(&g).unwrap());
            let mut lowered = g.clone();
            assert!(lower_stack(&mut lowered).unwrap());
            check(&lowered).unwrap();
            let ops: Vec<&str> = lowered.nodes.iter().map(|n| n.op.name()).collect();
            assert_eq!(ops, ["Unsqueeze", "Unsqueeze", "Unsqueeze", "Concat"]);
            let concat = &lowered.nodes[3];
            assert_eq!(concat.name, "st");
            assert_eq!(concat.op, Op::Concat { axis });
            assert_eq!(concat.outputs, ["y"]);
            let u = &lowered.nodes[0];
            if opset >= 13 {
                assert_eq!(u.op, Op::Unsqueeze { axes: None });
                assert_eq!(
                    lowered.constants[&u.inputs[1]].to_i64_vec().unwrap(),
                    [axis]
                );
            } else {
                assert_eq!(
                    u.op,
                    Op::Unsqueeze {
                        axes: Some(vec![axis])
                    }
                );
                assert_eq!(u.inputs, ["a"]);
            }
            assert!(raise_stack(&mut lowered));
            assert_eq!(print(&lowered, &check(&lowered).unwrap()), before);
        }
    }

    #[test]
    fn stack_without_inputs_is_an_error_naming_the_node() {
        let mut g = stack_graph(17, 0);
        g.nodes[0].inputs.clear();
        let e = lower_stack(&mut g).unwrap_err().to_string();
        assert!(e.contains("'st' (Stack)"), "{e}");
    }
}
