//! The stable text form of a graph: one line per value and per node. Snapshot tests keep it,
//! so its format changes only on purpose.

use super::{Facts, Graph};
use std::fmt::Write;

/// Prints the graph with the facts of each value (`?` where a value has none).
pub fn print(graph: &Graph, facts: &Facts) -> String {
    let fact = |name: &str| match facts.get(name) {
        Some(f) => format!("{name}: {f}"),
        None => format!("{name}: ?"),
    };
    let mut s = String::new();
    let _ = writeln!(s, "graph {} (opset {})", graph.name, graph.opset);
    for decl in &graph.inputs {
        let dims = match &decl.dims {
            Some(d) => d
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(","),
            None => "?".into(),
        };
        let _ = writeln!(s, "input {}: {}[{}]", decl.name, decl.dtype, dims);
    }
    for (name, t) in &graph.constants {
        let dims: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
        let _ = writeln!(s, "const {}: {}[{}]", name, t.dtype(), dims.join(","));
    }
    for node in &graph.nodes {
        let ins: Vec<String> = node
            .inputs
            .iter()
            .map(|i| {
                if i.is_empty() {
                    "_".to_string()
                } else {
                    i.clone()
                }
            })
            .collect();
        let outs: Vec<String> = node.outputs.iter().map(|o| fact(o)).collect();
        let attrs = node.op.attrs_text();
        let _ = write!(
            s,
            "node {}: {}({}) -> {}",
            node.name,
            node.op.name(),
            ins.join(", "),
            outs.join(", ")
        );
        if !attrs.is_empty() {
            let _ = write!(s, " {attrs}");
        }
        s.push('\n');
    }
    for out in &graph.outputs {
        let _ = writeln!(s, "output {}", fact(&out.name));
    }
    s
}
