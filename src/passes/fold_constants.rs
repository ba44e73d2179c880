//! `fold-constants`: a node whose inputs are all constants is evaluated once, now, with the
//! same kernels the interpreter uses, and its outputs become constants.
//!
//! Outputs must fit the tensor size limits (`tensor::limits`), checked from the shape rules
//! before anything is computed; a node whose result would not fit stays, with a note. A
//! graph output produced by a folded node stays an output: the IR allows a graph output to
//! name a constant (the checker accepts it, the interpreter returns the constant).

use super::{Notes, PassOptions};
use crate::ir::{check, Graph};
use crate::kernels;
use crate::tensor::{limits, Tensor};
use anyhow::{Context, Result};

pub fn run(graph: &mut Graph, _opts: &PassOptions, notes: &mut Notes) -> Result<bool> {
    let facts = check(graph)?;
    let mut changed = false;
    let mut kept = Vec::with_capacity(graph.nodes.len());
    for node in std::mem::take(&mut graph.nodes) {
        let present: Vec<&String> = node.inputs.iter().filter(|i| !i.is_empty()).collect();
        let foldable = !present.is_empty()
            && present.iter().all(|i| graph.constants.contains_key(*i))
            && node.op.is_deterministic();
        if !foldable {
            kept.push(node);
            continue;
        }
        // Shapes of constant-only nodes are always known; refuse what would not fit.
        let too_big = node.outputs.iter().filter(|o| !o.is_empty()).find_map(|o| {
            let f = facts.get(o)?;
            let shape = f.shape.as_ref()?;
            limits::check_alloc(shape, f.dtype).err()
        });
        if let Some(e) = too_big {
            notes.push(format!("{}: not folded: {e}", node.name));
            kept.push(node);
            continue;
        }
        let ins: Vec<Option<&Tensor>> = node
            .inputs
            .iter()
            .map(|i| (!i.is_empty()).then(|| &graph.constants[i]))
            .collect();
        let outs = kernels::eval(&node.op, &ins, node.outputs.len())
            .with_context(|| format!("node '{}' ({})", node.name, node.op.name()))?;
        for (name, t) in node.outputs.iter().zip(outs) {
            if !name.is_empty() {
                graph.constants.insert(name.clone(), t);
            }
        }
        changed = true;
    }
    graph.nodes = kept;
    // Inputs of folded nodes that nothing else reads.
    graph.remove_unused_constants();
    Ok(changed)
}
