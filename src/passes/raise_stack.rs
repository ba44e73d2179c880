//! `raise-stack`: `Unsqueeze(axis k)` x n -> `Concat(axis k)` becomes one `Stack(axis k)`.
//!
//! Exporters write `torch.stack` this way. Seeing it as one op lets passes and kernels treat
//! it directly instead of reasoning about n shape changes and a join. The importer runs it on
//! every model, so this is the one copy of the logic; `lower-stack` is its inverse.

use super::{Notes, PassOptions};
use crate::ir::{Graph, Node, Op};
use anyhow::Result;
use std::collections::{HashMap, HashSet};

/// The single axis an Unsqueeze node inserts, from its attribute or its constant input.
fn unsqueeze_axis(graph: &Graph, node: &Node) -> Option<i64> {
    let Op::Unsqueeze { axes } = &node.op else {
        return None;
    };
    let axes = match axes {
        Some(a) => a.clone(),
        None => graph.constants.get(node.input(1)?)?.to_i64_vec().ok()?,
    };
    match axes.as_slice() {
        [k] => Some(*k),
        _ => None,
    }
}

pub fn run(graph: &mut Graph, _opts: &PassOptions, _notes: &mut Notes) -> Result<bool> {
    Ok(raise_stack(graph))
}

/// Raises every Unsqueeze+Concat group it can; returns whether it raised any. Infallible, so
/// the importer can call it unconditionally.
pub fn raise_stack(graph: &mut Graph) -> bool {
    // How many times each value is read, by nodes or as a graph output.
    let mut reads: HashMap<String, usize> = HashMap::new();
    for n in &graph.nodes {
        for i in n.inputs.iter().filter(|s| !s.is_empty()) {
            *reads.entry(i.clone()).or_default() += 1;
        }
    }
    for o in &graph.outputs {
        *reads.entry(o.name.clone()).or_default() += 1;
    }

    let mut remove: HashSet<usize> = HashSet::new();
    let mut replace: Vec<(usize, Node)> = Vec::new();
    for (ci, concat) in graph.nodes.iter().enumerate() {
        let Op::Concat { axis } = concat.op else {
            continue;
        };
        if concat.inputs.is_empty() {
            continue;
        }
        let mut sources = Vec::new();
        let mut producers = Vec::new();
        for inp in &concat.inputs {
            // The Unsqueeze's output must feed this Concat once and nothing else.
            let Some(pi) = graph.producer(inp) else { break };
            let p = &graph.nodes[pi];
            if unsqueeze_axis(graph, p) != Some(axis)
                || reads.get(inp.as_str()) != Some(&1)
                || producers.contains(&pi)
            {
                break;
            }
            let Some(src) = p.input(0) else { break };
            sources.push(src.to_string());
            producers.push(pi);
        }
        if sources.len() != concat.inputs.len() {
            continue;
        }
        remove.extend(producers);
        replace.push((
            ci,
            Node {
                name: concat.name.clone(),
                op: Op::Stack { axis },
                inputs: sources,
                outputs: concat.outputs.clone(),
            },
        ));
    }
    let changed = !replace.is_empty();
    for (ci, node) in replace {
        graph.nodes[ci] = node;
    }
    // The Stack sits where the Concat was, after every Unsqueeze input, so order holds.
    let mut i = 0;
    graph.nodes.retain(|_| {
        i += 1;
        !remove.contains(&(i - 1))
    });
    // Axes constants read before but by no remaining node were read only by the removed
    // Unsqueezes: drop them. Constants that were never read are left alone.
    let still_read: HashSet<String> = graph
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter().cloned())
        .chain(graph.outputs.iter().map(|o| o.name.clone()))
        .collect();
    graph
        .constants
        .retain(|k, _| still_read.contains(k) || !reads.contains_key(k));
    changed
}
