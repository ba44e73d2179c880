//! The checker: runs after import and after every pass. Structure first (names defined once,
//! every input defined before use, outputs defined), then the shape and dtype rules.

use super::{analyze, DimBindings, Facts, Graph};
use anyhow::{bail, Result};
use std::collections::{HashMap, HashSet};

/// Checks the graph's structure and that the shape rules hold for the declared inputs
/// (symbolic dims taken as 1). Returns the facts computed on the way.
pub fn check(graph: &Graph) -> Result<Facts> {
    check_structure(graph)?;
    analyze(graph, &DimBindings::default())
}

/// Every value defined exactly once, every node input defined by an earlier node, an input
/// or a constant, node names unique, every graph output defined; sequences and optionals read
/// only by Identity, and graph outputs of the declared kind (`non_tensor_values`).
pub fn check_structure(graph: &Graph) -> Result<()> {
    let mut defined: HashSet<&str> = HashSet::new();
    for name in graph.constants.keys() {
        defined.insert(name);
    }
    for decl in &graph.inputs {
        if !defined.insert(&decl.name) {
            bail!(
                "graph input '{}' is defined twice (as an input and a constant?)",
                decl.name
            );
        }
    }
    // Where each value is produced, to tell a dangling name from a use before definition.
    let mut producer: HashMap<&str, &str> = HashMap::new();
    for node in &graph.nodes {
        for out in node.outputs.iter().filter(|o| !o.is_empty()) {
            producer.insert(out, &node.name);
        }
    }
    let mut node_names: HashSet<&str> = HashSet::new();
    for node in &graph.nodes {
        let op = node.op.name();
        if !node_names.insert(&node.name) {
            bail!(
                "node '{}' ({op}): another node has the same name",
                node.name
            );
        }
        for inp in node.inputs.iter().filter(|i| !i.is_empty()) {
            if !defined.contains(inp.as_str()) {
                match producer.get(inp.as_str()) {
                    Some(p) => bail!(
                        "node '{}' ({op}): input '{inp}' is produced by node '{p}', which does not come before it (a cycle, or nodes out of order)",
                        node.name
                    ),
                    None => bail!(
                        "node '{}' ({op}): input '{inp}' is not defined by any node, input or initializer",
                        node.name
                    ),
                }
            }
        }
        for out in node.outputs.iter().filter(|o| !o.is_empty()) {
            if !defined.insert(out) {
                bail!(
                    "node '{}' ({op}): output '{out}' is already defined",
                    node.name
                );
            }
        }
    }
    for out in &graph.outputs {
        if !defined.contains(out.name.as_str()) {
            bail!(
                "graph output '{}' is not produced by any node, input or initializer",
                out.name
            );
        }
    }
    super::non_tensor_values(graph)?;
    Ok(())
}
