//! `eliminate-identity`: Identity nodes (and inference Dropout, which imports as Identity)
//! disappear; whatever read their output reads their input instead.
//!
//! A graph output's name is part of the model's interface, so when an Identity produces a
//! graph output, its input is renamed to the output's name instead (the producing node's
//! output, or the constant). When that is not possible, the input being a graph input or
//! itself a graph output, the node stays, with a note.

use super::{Notes, PassOptions};
use crate::ir::{Graph, Op};
use anyhow::Result;

pub fn run(graph: &mut Graph, _opts: &PassOptions, notes: &mut Notes) -> Result<bool> {
    let mut changed = false;
    let mut i = 0;
    while i < graph.nodes.len() {
        let node = &graph.nodes[i];
        if node.op != Op::Identity {
            i += 1;
            continue;
        }
        let (src, dst) = match (node.input(0), node.outputs.as_slice()) {
            (Some(s), [d]) if !d.is_empty() => (s.to_string(), d.clone()),
            _ => {
                notes.push(format!(
                    "{}: not removed: needs one input and one output",
                    node.name
                ));
                i += 1;
                continue;
            }
        };
        if graph.is_output(&dst) {
            let is_input = graph.inputs.iter().any(|d| d.name == src);
            if is_input || graph.is_output(&src) {
                let what = if is_input {
                    "a graph input"
                } else {
                    "another graph output"
                };
                notes.push(format!(
                    "{}: not removed: it copies {what} ('{src}') to graph output '{dst}'",
                    node.name
                ));
                i += 1;
                continue;
            }
            // `src` is a node output or a constant read by no graph output: it takes the
            // output's name. Its producer (or the constant) comes before every reader of
            // `src` and of `dst`, so the order stays topological.
            graph.nodes.remove(i);
            rename_value(graph, &src, &dst);
        } else {
            graph.nodes.remove(i);
            for n in &mut graph.nodes {
                for inp in n.inputs.iter_mut().filter(|x| **x == dst) {
                    *inp = src.clone();
                }
            }
        }
        changed = true;
    }
    Ok(changed)
}

/// Renames a value defined by a node output or a constant, and every read of it.
fn rename_value(graph: &mut Graph, from: &str, to: &str) {
    if let Some(t) = graph.constants.remove(from) {
        graph.constants.insert(to.to_string(), t);
    }
    for n in &mut graph.nodes {
        for v in n.inputs.iter_mut().chain(n.outputs.iter_mut()) {
            if v == from {
                *v = to.to_string();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{check, Dim, Node, UnaryOp, ValueDecl};
    use crate::passes::{run_pipeline, PassOptions};
    use crate::tensor::{DType, Tensor};
    use crate::Runner;
    use std::collections::HashMap;

    fn decl(n: &str) -> ValueDecl {
        ValueDecl {
            name: n.into(),
            dtype: DType::F32,
            dims: Some(vec![Dim::Fixed(3)]),
            wrappers: vec![],
        }
    }

    fn node(name: &str, op: Op, inputs: &[&str], output: &str) -> Node {
        Node {
            name: name.into(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![output.into()],
        }
    }

    /// x -> id0 -> relu -> id1 (output y); relu's result also goes through id2 to output z,
    /// and id3 copies input x straight to output w; c (a constant) through id4 to output k.
    fn graph() -> Graph {
        let relu = Op::Unary(UnaryOp::Relu);
        let mut g = Graph {
            name: "ids".into(),
            opset: 17,
            inputs: vec![decl("x")],
            outputs: vec![decl("y"), decl("z"), decl("w"), decl("k")],
            nodes: vec![
                node("id0", Op::Identity, &["x"], "x1"),
                node("neg", Op::Unary(UnaryOp::Neg), &["x1"], "n"),
                node("relu", relu, &["n"], "r"),
                node("id1", Op::Identity, &["r"], "y"),
                node("id2", Op::Identity, &["y"], "z"),
                node("id3", Op::Identity, &["x"], "w"),
                node("id4", Op::Identity, &["c"], "k"),
            ],
            ..Default::default()
        };
        g.constants.insert(
            "c".into(),
            Tensor::from_vec(&[3], vec![1f32, 2., 3.]).unwrap(),
        );
        g
    }

    fn run_graph(g: &Graph) -> Vec<(String, Tensor)> {
        let x = Tensor::from_vec(&[3], vec![-1f32, 0.5, 2.]).unwrap();
        let inputs = HashMap::from([("x".to_string(), x)]);
        Runner::new(g).unwrap().run(inputs).unwrap()
    }

    #[test]
    fn removes_identities_and_keeps_output_names() {
        let g = graph();
        check(&g).unwrap();
        let before = run_graph(&g);
        let mut after = g.clone();
        let notes = run_pipeline(
            &mut after,
            &["eliminate-identity".to_string()],
            &PassOptions::default(),
        )
        .unwrap();
        let ops: Vec<(&str, &str)> = after
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.op.name()))
            .collect();
        // id2 copies output y to output z and id3 input x to output w: both must stay.
        assert_eq!(
            ops,
            [
                ("neg", "Neg"),
                ("relu", "Relu"),
                ("id2", "Identity"),
                ("id3", "Identity")
            ]
        );
        assert_eq!(after.nodes[0].inputs, ["x"]);
        assert_eq!(after.nodes[1].outputs, ["y"]);
        assert!(after.constants.contains_key("k") && !after.constants.contains_key("c"));
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("id2") && notes[0].contains("graph output"));
        assert!(notes[1].contains("id3") && notes[1].contains("graph input"));
        assert_eq!(run_graph(&after), before);
        let k = &run_graph(&after)[3];
        assert_eq!(
            k,
            &(
                "k".to_string(),
                Tensor::from_vec(&[3], vec![1f32, 2., 3.]).unwrap()
            )
        );
    }

    #[test]
    fn a_graph_without_identity_is_unchanged() {
        let mut g = graph();
        g.nodes.retain(|n| n.op != Op::Identity);
        g.nodes[0].inputs = vec!["x".into()];
        g.nodes[1].outputs = vec!["y".into()];
        g.outputs.truncate(1);
        let before = g.clone();
        assert!(!run(&mut g, &PassOptions::default(), &mut Notes::new()).unwrap());
        assert_eq!(g, before);
    }
}
