//! The execution plan, computed once per graph: a slot per value, each node's input and
//! output slots, and the slots that die after each node (their last use), so the interpreter
//! frees tensors as soon as nothing reads them, and the inputs an elementwise node may
//! overwrite with its output, or a view op (Reshape and kin) keep as its output under a
//! new shape (`in_place`).

use super::prepare::Prepared;
use crate::ir::{Graph, Op};
use crate::kernels;
use anyhow::{anyhow, Result};
use std::collections::HashMap;

pub struct Plan {
    /// Slot of every value name (constants, inputs, node outputs).
    pub slots: HashMap<String, usize>,
    pub n_slots: usize,
    /// Per node: the slot of each input (`None` for an absent optional one).
    pub node_inputs: Vec<Vec<Option<usize>>>,
    /// Per node: the slot of each output (`None` for an unnamed one).
    pub node_outputs: Vec<Vec<Option<usize>>>,
    /// Per node: run-time slots whose last reader is this node, freed right after it.
    pub frees: Vec<Vec<usize>>,
    pub output_slots: Vec<usize>,
    /// Per node: the inputs (by position) whose buffer the node may write its output into,
    /// best first: each a node output (not a graph input or constant) that dies at this
    /// node, read once by it, of an op with an in-place form (`kernels::may_run_in_place`).
    /// Whether the buffer fits (for elementwise ops: f32, contiguous, the output's shape)
    /// is only known when running.
    pub in_place: Vec<Vec<usize>>,
    /// Per node: for a Concat, an earlier Concat's output (its slot, and how many of this
    /// node's first inputs it joined) that nobody reads after it, kept alive until this node
    /// so its buffer can be extended with the remaining inputs
    /// (`kernels::layout::concat_extending`) rather than all inputs copied again.
    pub extends: Vec<Option<(usize, usize)>>,
    /// Per-node state built from constants (packed Conv weights, fused activations).
    pub prepared: Prepared,
}

impl Plan {
    pub fn new(graph: &Graph) -> Result<Plan> {
        let mut slots = HashMap::new();
        let slot_of = |name: &str, slots: &mut HashMap<String, usize>| {
            let n = slots.len();
            *slots.entry(name.to_string()).or_insert(n)
        };
        for name in graph.constants.keys() {
            slot_of(name, &mut slots);
        }
        for decl in &graph.inputs {
            slot_of(&decl.name, &mut slots);
        }
        let mut node_inputs = Vec::with_capacity(graph.nodes.len());
        let mut node_outputs = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            let ins = node
                .inputs
                .iter()
                .map(|i| {
                    if i.is_empty() {
                        Ok(None)
                    } else {
                        slots.get(i).copied().map(Some).ok_or_else(|| {
                            anyhow!(
                                "node '{}' ({}): input '{i}' is not defined before it",
                                node.name,
                                node.op.name()
                            )
                        })
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            node_inputs.push(ins);
            let outs = node
                .outputs
                .iter()
                .map(|o| (!o.is_empty()).then(|| slot_of(o, &mut slots)))
                .collect();
            node_outputs.push(outs);
        }
        let output_slots = graph
            .outputs
            .iter()
            .map(|o| {
                slots
                    .get(&o.name)
                    .copied()
                    .ok_or_else(|| anyhow!("graph output '{}' is not defined", o.name))
            })
            .collect::<Result<Vec<_>>>()?;

        // Last reader of each slot; graph outputs and constants are never freed.
        let mut last_use: HashMap<usize, usize> = HashMap::new();
        for (i, ins) in node_inputs.iter().enumerate() {
            for s in ins.iter().flatten() {
                last_use.insert(*s, i);
            }
        }
        // A Conv that applies a BatchNorm to its input reads that BatchNorm's X in fused
        // runs (`Prepared::input_affine`).
        let prepared = Prepared::new(graph);
        for (k, bn) in prepared.input_affine.iter().enumerate() {
            if let Some(Some(x)) = bn.and_then(|i| node_inputs[i].first().copied()) {
                let at = last_use.entry(x).or_insert(k);
                *at = (*at).max(k);
            }
        }
        let extends = concat_extends(graph, &node_inputs, &node_outputs, &output_slots, &last_use);
        for (j, e) in extends.iter().enumerate() {
            if let Some((s, _)) = e {
                last_use.insert(*s, j);
            }
        }
        let n_consts = graph.constants.len();
        let mut frees = vec![Vec::new(); graph.nodes.len()];
        for (slot, node) in last_use {
            if slot >= n_consts && !output_slots.contains(&slot) {
                frees[node].push(slot);
            }
        }
        for f in &mut frees {
            f.sort_unstable();
        }
        let input_slots: Vec<usize> = graph.inputs.iter().map(|d| slots[&d.name]).collect();
        let in_place = graph
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let ins = &node_inputs[i];
                (0..ins.len())
                    .filter(|&k| {
                        let Some(s) = ins[k] else { return false };
                        kernels::may_run_in_place(&node.op, k)
                            && frees[i].contains(&s)
                            && !input_slots.contains(&s)
                            && ins.iter().filter(|t| **t == Some(s)).count() == 1
                    })
                    .collect()
            })
            .collect();
        Ok(Plan {
            n_slots: slots.len(),
            slots,
            node_inputs,
            node_outputs,
            frees,
            output_slots,
            in_place,
            extends,
            prepared,
        })
    }
}

/// The Concats that can extend an earlier Concat's buffer (see [`Plan::extends`]): Concat
/// `j` takes the output of the latest Concat `i < j` on the same axis whose inputs are a
/// proper prefix of `j`'s, when that output is read by nothing at or after `j`, is not a
/// graph output, and no other Concat takes it. DenseNet's `torch.cat(features)` in every
/// layer of a block is this chain. Values never change once computed, so the kept output
/// still holds the concat of those inputs when `j` runs; it stays alive through the nodes
/// in between (it no longer dies at its last reader, so none of them overwrites it).
fn concat_extends(
    graph: &Graph,
    node_inputs: &[Vec<Option<usize>>],
    node_outputs: &[Vec<Option<usize>>],
    output_slots: &[usize],
    last_use: &HashMap<usize, usize>,
) -> Vec<Option<(usize, usize)>> {
    let mut extends = vec![None; graph.nodes.len()];
    let mut taken = Vec::new();
    for (j, node) in graph.nodes.iter().enumerate() {
        let Op::Concat { axis } = node.op else {
            continue;
        };
        let ins = &node_inputs[j];
        extends[j] = (0..j).rev().find_map(|i| {
            let Op::Concat { axis: a } = graph.nodes[i].op else {
                return None;
            };
            let prefix = &node_inputs[i];
            let s = node_outputs[i].first().copied().flatten()?;
            let fits = a == axis
                && !prefix.is_empty()
                && prefix.len() < ins.len()
                && prefix.iter().all(Option::is_some)
                && ins[..prefix.len()] == prefix[..]
                && last_use.get(&s).is_some_and(|&u| u < j)
                && !output_slots.contains(&s)
                && !taken.contains(&s);
            fits.then_some((s, prefix.len()))
        });
        if let Some((s, _)) = extends[j] {
            taken.push(s);
        }
    }
    extends
}
