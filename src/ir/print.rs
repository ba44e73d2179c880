//! The stable text form of a graph: one line per value and per node. Snapshot tests keep it,
//! so its format changes only on purpose.

use super::{non_tensor_values, Facts, Graph};
use std::fmt::Write;

/// Prints the graph with the facts of each value (its declared type for a sequence or
/// optional, `?` where a value has none).
pub fn print(graph: &Graph, facts: &Facts) -> String {
    let non_tensor = non_tensor_values(graph).unwrap_or_default();
    let fact = |name: &str| match (facts.get(name), non_tensor.get(name)) {
        (Some(f), _) => format!("{name}: {f}"),
        (None, Some(decl)) => format!("{name}: {}", decl.type_text()),
        (None, None) => format!("{name}: ?"),
    };
    let mut s = String::new();
    let _ = writeln!(s, "graph {} (opset {})", graph.name, graph.opset);
    for decl in &graph.inputs {
        let _ = writeln!(s, "input {}: {}", decl.name, decl.type_text());
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
